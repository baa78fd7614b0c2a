"""The `faceaudit` command line: thin wrappers over library calls."""

from __future__ import annotations

import click

from faceaudit import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faceaudit")
def main() -> None:
    """Audit face-recognition networks for bias."""


if __name__ == "__main__":  # pragma: no cover
    main()
