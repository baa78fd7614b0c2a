"""The `faceaudit` command line: thin wrappers over library calls.

Every command parses its flags, calls one library function and prints a short
summary. Errors a user can cause (`FaceAuditError`) become one red line and
exit code 2; anything else is a failure (exit code 1) and says how to get the
traceback (`--debug`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from faceaudit import __version__
from faceaudit.errors import BackendError, FaceAuditError, command_line

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# Terminal escape sequences (CSI, OSC, other ESC sequences, 8-bit CSI) and the remaining control characters
# but tab and newline: manifest cells, file names and layer names reach the terminal only as plain text.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x9b[0-?]*[ -/]*[@-~]|\x1b[@-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """`text` without terminal escape sequences and control characters, so printing it cannot drive the terminal."""
    return _CONTROL.sub("", _ESCAPES.sub("", text))


def _echo(text: str, **kwargs: Any) -> None:
    click.echo(_printable(text), **kwargs)


class _AuditGroup(click.Group):
    """A click group that turns library errors into exit codes without tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with command_line():
                return super().invoke(ctx)
        except FaceAuditError as exc:
            click.secho(_printable(f"error: {exc}"), fg="red", err=True)
            ctx.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BackendError as exc:  # a bug in a backend (plugin), named with its package and version
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"backend error: {exc}", fg="red", err=True)
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.secho(
                "interrupted: finished work is cached; rerun the same command to resume.",
                fg="yellow",
                err=True,
            )
            ctx.exit(130)
        except Exception as exc:  # a bug, not a user mistake
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(
                _printable(f"failure: {type(exc).__name__}: {exc} (rerun with `faceaudit --debug ...` for the traceback)"),
                fg="red",
                err=True,
            )
            ctx.exit(EXIT_FAILURE)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _executor_flags(func: Any) -> Any:
    """--executor/--address/--ray-actors, shared by run, trend and compare."""
    func = click.option("--ray-actors", default=None, type=click.IntRange(1),
                        help="Ray actors (model copies) [default: one per GPU, else one per CPU core].")(func)
    func = click.option("--address", "ray_address", default=None,
                        help="Address of an existing Ray cluster (e.g. ray://head:10001 or auto) "
                             "[default: $RAY_ADDRESS, else a local one for this run].")(func)
    func = click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                        help="Where extraction runs: this process, or Ray Data batch inference "
                             "(needs `pip install faceaudit[ray]`).")(func)
    return func


def _multi_model_flags(what: str) -> Any:
    """--quick ... --strict, shared by trend and compare; `what` names one model in the help."""
    options = [
        click.option("--quick", is_flag=True, help="Fast preset: one seed, shorter critic training, "
                     "16 principal components, at most 2,000 images."),
        click.option("--pooling", default="avg", show_default=True,
                     help="Feature map to vector: avg, max, gridK, flatten."),
        click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1)),
        click.option("--align/--no-align", default=False, show_default=True,
                     help="Align each image from its 5 landmarks first."),
        click.option("--backend", default=None, help="Backend name (default: chosen from each file's suffix)."),
        click.option("--cache-dir", default=None, type=click.Path(path_type=Path),
                     help=f"Feature cache, one folder per {what} [default: OUT/cache]."),
        click.option("--max-images", default=None, type=click.IntRange(20),
                     help="Use a random subset of this many images."),
        click.option("--strict", is_flag=True, help="Fail on the first unreadable image instead of skipping it."),
    ]

    def apply(func: Any) -> Any:
        for option in reversed(options):  # applied bottom-up, so --help lists them in this order
            func = option(func)
        return func

    return apply


def _executor_options(executor: str, ray_address: str | None, ray_actors: int | None) -> dict[str, Any]:
    if executor == "local":
        return {}
    return {"executor": executor, "ray_address": ray_address, "ray_actors": ray_actors}


EXIT_FINDINGS = 3  # --fail-on: a finding at or above the level is present


def _pipeline_flags(func: Any) -> Any:
    """--n-faces, --fail-on, --quiet: shared by run, trend and compare."""
    func = click.option("-q", "--quiet", is_flag=True,
                        help="Print only the final summary: no progress, no stage lines, no warnings.")(func)
    func = click.option("--fail-on", type=click.Choice(["high", "medium", "low"]), default=None,
                        help="Exit with code 3 when a finding of this severity or higher is present "
                             "(for CI); the findings that tripped it are printed.")(func)
    func = click.option("--n-faces", default=None, type=click.IntRange(20),
                        help="Without --data: how many phantom faces to generate (10 per identity) "
                             "[default: 1200].")(func)
    return func


@contextlib.contextmanager
def _quiet_logging(quiet: bool) -> Iterator[None]:
    """--quiet: only errors from the library's loggers while the command runs."""
    logger = logging.getLogger("faceaudit")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _finish(outcome: Any, fail_on: str | None) -> None:
    """Print the summary; with --fail-on, exit 3 naming the findings at or above the level."""
    from faceaudit.report.gate import findings_at_or_above

    _print_outcome(outcome)
    if fail_on is None:
        return
    tripped = findings_at_or_above(outcome.report, fail_on)
    if tripped:
        click.echo(f"fail-on {fail_on}: {len(tripped)} finding(s) at or above {fail_on}:", err=True)
        for f in tripped:
            click.echo(f"  {f.severity.upper()}: {f.text}", err=True)
        raise click.exceptions.Exit(EXIT_FINDINGS)


_SPEC_FLAG_NAMES = {"channel_order": "--channel-order", "mean": "--mean", "std": "--std",
                    "input_size": "--input-size"}


def _input_spec_flags(per_model: bool) -> Any:
    """--channel-order/--mean/--std/--input-size (and, for several models, --input-spec MODEL=FILE)."""
    options = [
        click.option("--channel-order", default=None, metavar="RGB|BGR",
                     help="Colour order the model expects, any case [default: the sidecar MODEL.faceaudit.json, "
                          "else the model's metadata, else RGB]."),
        click.option("--mean", default=None, metavar="M|R,G,B",
                     help="Pixel mean subtracted (0..255 scale): one value or three in R,G,B order [default: 127.5]."),
        click.option("--std", default=None, metavar="S|R,G,B",
                     help="Divisor after the mean (> 0): one value or three in R,G,B order [default: 127.5]."),
        click.option("--input-size", default=None, metavar="HxW",
                     help="Input height x width in pixels, e.g. 112x112 [default: from the model]."),
    ]
    if per_model:
        options.append(click.option(
            "--input-spec", "input_specs", multiple=True, metavar="MODEL=FILE",
            help="A JSON input spec (the sidecar's keys) for one model, named by its path, file name or label; "
                 "repeatable. Wins over the flags above for that model."))

    def apply(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _spec_options(channel_order: str | None, mean: str | None, std: str | None,
                  input_size: str | None) -> dict[str, Any]:
    """The spec flags as open_model keywords, validated (a bad value names its flag; exit 2)."""
    from faceaudit.backends.spec import spec_overrides

    return spec_overrides(channel_order=channel_order, mean=mean, std=std, input_size=input_size,
                          names=_SPEC_FLAG_NAMES)


def _many_model_settings(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The config keywords of `trend` and `compare` from their flags: the shared flags converted as every run
    converts them (labels, layers, input specs, executor, progress), the others passed on by name."""
    f = dict(flags)
    f.pop("fail_on")
    quiet = f.pop("quiet")
    f.update(
        labels=_split(f.pop("labels")) or None,
        layers=f.pop("layers_spec"),
        progress=False if quiet else None,
        executor_options=_executor_options(f.pop("executor"), f.pop("ray_address"), f.pop("ray_actors")),
        backend_options=_spec_options(f.pop("channel_order"), f.pop("mean"), f.pop("std"), f.pop("input_size")),
        input_specs=_per_model_specs(f.pop("input_specs")),
    )
    if "fairness_attrs" in f:
        f["fairness_attrs"] = _split(f["fairness_attrs"]) or None
    return f


def _run_many_models(config_cls: Callable[..., Any], run: Callable[[Any], Any], flags: Mapping[str, Any],
                     **models: Any) -> None:
    """Build the `trend` or `compare` config from its flags and `models`, run it, and report as every command does."""
    config = config_cls(**models, **_many_model_settings(flags))
    with _quiet_logging(bool(flags["quiet"])):
        outcome = run(config)
    _finish(outcome, flags["fail_on"])


def _per_model_specs(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """--input-spec MODEL=FILE values -> {MODEL: spec keys}; each FILE read and validated now."""
    from faceaudit.backends.spec import read_spec_file
    from faceaudit.errors import InputError

    out: dict[str, dict[str, Any]] = {}
    for value in values:
        name, sep, file = value.rpartition("=")
        if not sep or not name or not file:
            raise InputError(f"--input-spec {value!r}: write it as MODEL=FILE, e.g. --input-spec b.onnx=b_spec.json.")
        out[name] = read_spec_file(file, "--input-spec file")
    return out


@click.group(cls=_AuditGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="faceaudit")
@click.option("--debug", is_flag=True, help="Show full tracebacks for failures.")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """Audit face-recognition networks for bias.

    faceaudit measures how strongly each layer of a face network encodes age,
    sex, head pose (yaw) or race -- the layer's *expressivity*, the mutual
    information between its features and the attribute, in nats -- and puts it
    beside per-group face-verification error rates (FMR/FNMR), in one
    self-contained HTML report with a JSON twin.

    \b
    Start here:
      faceaudit run model.onnx --attrs age,sex,yaw   # on built-in phantom faces
      faceaudit demo --out faceaudit-demo            # complete audit, no files needed
      faceaudit layers model.onnx                    # what can be probed
      faceaudit run model.onnx --data faces.csv --attrs age,sex,yaw
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


_RUN_EPILOG = """\b
Examples:
  faceaudit run model.onnx --attrs age,sex,yaw
  faceaudit run model.onnx --data faces.csv --attrs age,sex,yaw --fail-on high
  faceaudit run model.onnx --data faces.csv --attrs age:continuous,race --layers 'stage*,embedding'
  faceaudit run model.pt2 --data faces.parquet --attrs sex --quick --out audit-quick
"""


@main.command(epilog=_RUN_EPILOG)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "manifest", default=None, type=click.Path(path_type=Path),
              help="Manifest (CSV or Parquet): a `path` column, optional `identity`, attribute columns, "
                   "optional landmarks lm_x1..lm_y5 [default: built-in synthetic phantom faces, for a first look].")
@click.option("--attrs", required=True,
              help="Attributes to audit, comma separated; add `:continuous` or `:categorical` to override "
                   "the inferred kind (e.g. age,sex,yaw or age:continuous,race).")
@click.option("--layers", "layers_spec", default="auto", show_default=True,
              help="Layers to probe: `auto` (about five, input to embedding), names, or glob patterns, "
                   "comma separated. `faceaudit layers MODEL` lists them.")
@click.option("--estimator", default="mine", show_default=True,
              help="MI estimator (mine, smile, infonce, nwj, entropy, or a plugin's).")
@click.option("--seeds", default=None, type=click.IntRange(1, 50),
              help="Critics per cross-fitting fold, averaged into one (every estimate is cross-fitted over 5 "
                   "folds, 3 with --quick). [default: 1]")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available, else CPU), cpu, or cuda[:N].")
@click.option("--target-fmr", default=1e-3, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="False match rate at which the single global verification threshold is set.")
@click.option("--out", "out_dir", default=Path("faceaudit-report"), show_default=True,
              type=click.Path(path_type=Path), help="Output folder for report.html and report.json.")
@click.option("--quick", is_flag=True, help="A fast preset: one seed, shorter training, at most 2,000 images.")
@click.option("--pooling", default="avg", show_default=True,
              help="Feature map to vector: avg (global average), max, gridK (K x K spatial average, e.g. grid2), "
                   "or flatten (capped size).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1))
@click.option("--align/--no-align", default=False, show_default=True,
              help="Align each image from its 5 landmarks to the 112x112 ArcFace template first "
                   "(only for unaligned images whose landmarks are in the manifest).")
@click.option("--fairness-attrs", default=None,
              help="Attributes to compute verification fairness for [default: all audited ones]; "
                   "join with `*` for intersectional groups, e.g. sex,sex*age.")
@click.option("--backend", default=None, help="Backend name (default: chosen from the file suffix).")
@click.option("--cache-dir", default=None, type=click.Path(path_type=Path),
              help="Feature cache [default: OUT/cache]. A rerun reuses finished work.")
@click.option("--strict", is_flag=True, help="Fail on the first unreadable image instead of skipping it.")
@click.option("--seed", default=0, show_default=True, help="Seed for splits, critics, pairs and bootstrap.")
@click.option("--trust-pickle", is_flag=True,
              help="DANGEROUS: allow full-pickle PyTorch files, which can run arbitrary code. "
                   "Only for files you created yourself.")
@_input_spec_flags(per_model=False)
@_executor_flags
@_pipeline_flags
def run(model: Path, manifest: Path | None, attrs: str, layers_spec: str, estimator: str, seeds: int | None,
        device: str, target_fmr: float, out_dir: Path, quick: bool, pooling: str, batch_size: int,
        align: bool, fairness_attrs: str | None, backend: str | None, cache_dir: Path | None,
        strict: bool, seed: int, trust_pickle: bool, channel_order: str | None, mean: str | None,
        std: str | None, input_size: str | None, executor: str, ray_address: str | None,
        ray_actors: int | None, n_faces: int | None, fail_on: str | None, quiet: bool) -> None:
    """Audit MODEL on the faces of a manifest; write report.html, report.json and report.md.

    Runs the whole path: features for all chosen layers in one pass (cached),
    expressivity of every layer x attribute (all critics trained in one batched
    job), and verification fairness per group when the manifest has an
    `identity` column. Without --data, the faces are built-in synthetic
    phantom faces (a first look, not evidence about real people). Exit code 0
    when done, 2 for a problem with the input, 1 for a failure, 3 when
    --fail-on finds a finding at or above its level.
    """
    from faceaudit.audit import AuditConfig, run_audit

    config = AuditConfig(
        model=model, manifest=manifest, attrs=attrs, layers=layers_spec, estimator=estimator,
        seeds=seeds, device=device, target_fmr=target_fmr, out_dir=out_dir, quick=quick,
        pooling=pooling, batch_size=batch_size, align=align,
        fairness_attrs=_split(fairness_attrs) or None, backend=backend, cache_dir=cache_dir,
        strict=strict, seed=seed, trust_pickle=trust_pickle,
        backend_options=_spec_options(channel_order, mean, std, input_size),
        executor_options=_executor_options(executor, ray_address, ray_actors),
        n_faces=n_faces, progress=False if quiet else None,
    )
    with _quiet_logging(quiet):
        outcome = run_audit(config)
    _finish(outcome, fail_on)


def _print_outcome(outcome: Any) -> None:
    from faceaudit.report.markdown import markdown_name
    from faceaudit.spec_check import check_message

    report = getattr(outcome, "report", None) or {}
    checks = [report.get("input_check")] + [m.get("input_check") for m in report.get("models") or report.get("checkpoints") or ()]
    for check in checks:
        msg = check_message(check, (check or {}).get("model"))
        if msg:
            click.secho(_printable(f"warning: {msg}"), fg="yellow", err=True)
    _echo(f"report: {outcome.html_path}")
    _echo(f"json:   {outcome.json_path}")
    md = Path(outcome.html_path).with_name(markdown_name(report))
    if md.is_file():
        _echo(f"md:     {md}")
    if (report.get("data") or {}).get("synthetic"):
        _echo("data:   built-in synthetic phantom faces (no --data): a first look, not evidence about real people")
    for line in outcome.findings[:5]:
        _echo(f"  - {line}")


_TREND_EPILOG = """\b
Examples:
  faceaudit trend ckpt_000.onnx ckpt_025k.onnx ckpt_050k.onnx --data faces.csv --attrs age,sex,yaw
  faceaudit trend run/*.onnx --labels 0,25k,50k,75k --data faces.csv --attrs sex,identity --layers final
  faceaudit trend a.pt2 b.pt2 c.pt2 --data faces.parquet --attrs yaw --layer 'stage3*' --quick
"""


@main.command(epilog=_TREND_EPILOG)
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "manifest", default=None, type=click.Path(path_type=Path),
              help="Manifest (CSV or Parquet): a `path` column, optional `identity`, attribute columns "
                   "[default: built-in synthetic phantom faces].")
@click.option("--attrs", required=True,
              help="Attributes, comma separated (e.g. age,sex,yaw); `identity` adds identity expressivity "
                   "(categorical, many classes; needs an `identity` column).")
@click.option("--labels", default=None,
              help="One label per checkpoint, comma separated, in the same order (e.g. 0,25k,50k) "
                   "[default: the file names].")
@click.option("--layer", default="final", show_default=True,
              help="The layer followed across checkpoints: `final` (the embedding) or a layer name.")
@click.option("--layers", "layers_spec", default="auto", show_default=True,
              help="Layers of the layers x checkpoints view: `auto`, names or glob patterns, or `final` "
                   "to measure the followed layer only (fastest).")
@click.option("--estimator", default="mine", show_default=True, help="MI estimator for the attributes.")
@click.option("--identity-estimator", default="entropy", show_default=True,
              help="MI estimator for `identity` (entropy: H(Y) - H(Y|X) from a classifier).")
@click.option("--seeds", default=None, type=click.IntRange(1, 50),
              help="Critics per cross-fitting fold, averaged into one. [default: 1]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, or cuda[:N].")
@click.option("--out", "out_dir", default=Path("faceaudit-trend"), show_default=True,
              type=click.Path(path_type=Path), help="Output folder for trend.html and trend.json.")
@_multi_model_flags("checkpoint")
@click.option("--seed", default=0, show_default=True, help="Seed for subsets, splits and critics.")
@click.option("--trust-pickle", is_flag=True, help="DANGEROUS: allow full-pickle PyTorch files.")
@_input_spec_flags(per_model=True)
@_executor_flags
@_pipeline_flags
def trend(checkpoints: tuple[Path, ...], **flags: Any) -> None:
    """Follow expressivity across training CHECKPOINTS (in training order); write trend.html and trend.json.

    As a face network trains, the information its final layer holds about yaw,
    sex and age first rises and then falls, while identity keeps rising. This
    measures that for your checkpoints: every checkpoint x layer x attribute in
    one batched job, features cached per checkpoint, each rise and fall tested
    against the combined uncertainty. Exit code 0 when done, 2 for a problem
    with the input, 1 for a failure.
    """
    from faceaudit.trend import TrendConfig, run_trend

    _run_many_models(TrendConfig, run_trend, flags, checkpoints=list(checkpoints))


_COMPARE_EPILOG = """\b
Examples:
  faceaudit compare before.onnx after_mitigation.onnx --data faces.csv --attrs sex,age
  faceaudit compare vendor_a.onnx vendor_b.pt2 --labels A,B --data lfw.csv --attrs sex,yaw --target-fmr 1e-4
"""


@main.command(epilog=_COMPARE_EPILOG)
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "manifest", default=None, type=click.Path(path_type=Path),
              help="Manifest (CSV or Parquet): a `path` column, optional `identity`, attribute columns "
                   "[default: built-in synthetic phantom faces].")
@click.option("--attrs", required=True, help="Attributes, comma separated (e.g. age,sex,yaw,identity).")
@click.option("--labels", default=None,
              help="One label per model, comma separated [default: the file names]. The first is the reference.")
@click.option("--layers", "layers_spec", default="auto", show_default=True,
              help="Layers to compare (on the first model): `auto`, names, globs or `final`. Models of another "
                   "architecture are matched by relative depth.")
@click.option("--estimator", default="mine", show_default=True, help="MI estimator for the attributes.")
@click.option("--identity-estimator", default="entropy", show_default=True, help="MI estimator for `identity`.")
@click.option("--seeds", default=None, type=click.IntRange(1, 50),
              help="Critics per cross-fitting fold, averaged into one. [default: 1]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, or cuda[:N].")
@click.option("--target-fmr", default=1e-3, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="False match rate at which each model's global verification threshold is set.")
@click.option("--fairness-attrs", default=None,
              help="Attributes to compare verification fairness for [default: all audited but identity]; "
                   "join with `*` for intersectional groups.")
@click.option("--z", "z", default=1.96, show_default=True, type=click.FloatRange(0, min_open=True),
              help="A difference counts when it exceeds z x sqrt(se_a^2 + se_b^2).")
@click.option("--out", "out_dir", default=Path("faceaudit-compare"), show_default=True,
              type=click.Path(path_type=Path), help="Output folder for compare.html and compare.json.")
@_multi_model_flags("model")
@click.option("--seed", default=0, show_default=True, help="Seed for subsets, splits, critics, pairs and bootstrap.")
@click.option("--trust-pickle", is_flag=True, help="DANGEROUS: allow full-pickle PyTorch files.")
@_input_spec_flags(per_model=True)
@_executor_flags
@_pipeline_flags
def compare(models: tuple[Path, ...], **flags: Any) -> None:
    """Compare MODELS side by side on the same faces; write compare.html and compare.json.

    Expressivity per matched layer and attribute, verification error rates per
    group, and every difference to the first model (the reference: before
    mitigation, vendor A) with whether it exceeds the combined uncertainty.
    Exit code 0 when done, 2 for a problem with the input, 1 for a failure.
    """
    from faceaudit.compare import CompareConfig, run_compare

    _run_many_models(CompareConfig, run_compare, flags, models=list(models))


@main.command(epilog="\b\nExamples:\n  faceaudit layers model.onnx\n  faceaudit layers model.pt2 --json\n"
                      "  faceaudit layers model.onnx --pooling grid2")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--backend", default=None, help="Backend name (default: chosen from the file suffix).")
@click.option("--pooling", default="avg", show_default=True,
              help="Pooling the `dim` column is computed for: avg, max, gridK, flatten (as in `run --pooling`).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("--trust-pickle", is_flag=True, help="DANGEROUS: allow full-pickle PyTorch files.")
def layers(model: Path, backend: str | None, pooling: str, as_json: bool, trust_pickle: bool) -> None:
    """List the layers of MODEL by their own names, marking what `--layers auto` picks.

    Each row shows the layer's output shape, the dimension of the features
    extracted from it under --pooling (`input` is the preprocessed face
    faceaudit feeds the model) and its relative depth (0 = input, 1 = output).
    Use the names (or glob patterns over them) with `faceaudit run --layers`.
    """
    from faceaudit.backends import layer_table, open_model

    options: dict[str, Any] = {"trust_pickle": True} if trust_pickle else {}
    table = layer_table(open_model(model, backend=backend, **options), pooling=pooling)
    if as_json:
        _echo(json.dumps(table, indent=2))
        return
    width = max([len(r["name"]) for r in table] + [4])
    shapes = ["x".join("N" if s is None else str(s) for s in r["shape"]) if r.get("shape") else "?" for r in table]
    swidth = max([len(s) for s in shapes] + [5])
    _echo(f"{'auto':4}  {'name':{width}}  {'kind':14}  {'shape':{swidth}}  {'dim':>7}  depth")
    for row, shape in zip(table, shapes):
        mark = " *" if row.get("auto") else ""
        dim = "?" if row.get("dim") is None else str(row["dim"])
        final = "  (final)" if row.get("final") else ""
        _echo(f"{mark:4}  {row['name']:{width}}  {str(row.get('kind', '')):14}  {shape:{swidth}}  {dim:>7}  "
                   f"{row['depth']:.2f}{final}")
    _echo(f"\n{len(table)} layers; * = picked by --layers auto; dim = features per image with "
               f"--pooling {pooling}; depth: 0 = input .. 1 = output")


_SPEC_EPILOG = """\b
Examples:
  faceaudit spec model.onnx                                  # the spec in use and where it comes from
  faceaudit spec model.onnx --channel-order BGR --write      # save it beside the model (model.onnx.faceaudit.json)
  faceaudit spec model.onnx --channel-order BGR --embed --out model_bgr.onnx
"""


@main.command(epilog=_SPEC_EPILOG)
@click.argument("model", type=click.Path(path_type=Path))
@_input_spec_flags(per_model=False)
@click.option("--write", "write_sidecar", is_flag=True,
              help="Save the resulting spec as the sidecar MODEL.faceaudit.json, read by every later audit "
                   "(replaces only an existing faceaudit sidecar).")
@click.option("--embed", is_flag=True, help="Write the resulting spec into an ONNX model's metadata "
                                            "(faceaudit.input_spec): into a new file (--out) or, with --in-place, "
                                            "the model itself.")
@click.option("--out", "out_model", default=None, type=click.Path(path_type=Path),
              help="With --embed: the new model file to write (must not exist).")
@click.option("--in-place", is_flag=True, help="With --embed: replace MODEL itself (atomically).")
@click.option("--backend", default=None, help="Backend name (default: chosen from the file suffix).")
@click.option("--json", "as_json", is_flag=True, help="Print the spec as JSON.")
@click.option("--trust-pickle", is_flag=True, help="DANGEROUS: allow full-pickle PyTorch files.")
def spec(model: Path, channel_order: str | None, mean: str | None, std: str | None, input_size: str | None,
         write_sidecar: bool, embed: bool, out_model: Path | None, in_place: bool, backend: str | None,
         as_json: bool, trust_pickle: bool) -> None:
    """Show the input spec MODEL is fed with and where each key comes from; optionally save it.

    Precedence: these flags, then the sidecar MODEL.faceaudit.json, then the
    model's metadata, then the model's input shape, then the default (112x112,
    RGB, mean 127.5, std 127.5).
    """
    from faceaudit.backends import open_model
    from faceaudit.backends.spec import embed_onnx, spec_report
    from faceaudit.backends.spec import write_sidecar as write_side
    from faceaudit.errors import InputError

    if (out_model is not None or in_place) and not embed:
        raise InputError("--out and --in-place go with --embed; add --embed, or use --write for a sidecar.")
    options: dict[str, Any] = {"trust_pickle": True} if trust_pickle else {}
    m = open_model(model, backend=backend, **options, **_spec_options(channel_order, mean, std, input_size))
    report = spec_report(m)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        sources = report["sources"]
        click.echo(f"input spec of {model.name} (source: {report['source']}):")
        for key in ("height", "width", "layout", "channel_order", "mean", "std"):
            value = report[key]
            shown = ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)
            click.echo(f"  {key:14} {shown:24} ({sources[key]})")
    if write_sidecar:
        click.echo(f"wrote: {write_side(model, m.input_spec)}")
    if embed:
        click.echo(f"wrote: {embed_onnx(model, m.input_spec, out_model, in_place=in_place)}")


@main.command()
def plugins() -> None:
    """List installed backends (with the file suffixes each opens) and estimators, with the package and
    version providing each.

    Third-party plugins register in the `faceaudit.backends` and
    `faceaudit.estimators` entry-point groups (see the README, "Writing a
    backend plugin"). A file goes to the backend with the longest matching suffix.
    """
    from faceaudit.backends import list_backends
    from faceaudit.registry import ESTIMATORS, list_plugins

    _echo("backends:")
    for b in list_backends():
        suffixes = " ".join(b.suffixes) if b.error is None else "(failed to load)"
        _echo(f"  {b.name:10} {suffixes:24} {b.distribution} {b.version}  ({b.value})")
        if b.error is not None:
            _echo(f"             {b.error}")
    _echo("estimators:")
    for p in list_plugins(ESTIMATORS):
        _echo(f"  {p.name:10} {p.distribution} {p.version}  ({p.value})")


@main.command(epilog="\b\nExamples:\n  faceaudit report faceaudit-report/report.json --out shared/report.html\n"
                     "  faceaudit report faceaudit-report/report.json --format md --out MODEL_CARD_bias.md")
@click.argument("report_json", type=click.Path(path_type=Path))
@click.option("--out", "out_html", default=None, type=click.Path(path_type=Path),
              help="Where to write it: a file, or a folder to write report.html (report.md, trend.html, ...) "
                   "into [default: beside the JSON].")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True,
              help="html: the full report; md: the GitHub-flavoured Markdown summary for a model card.")
@click.option("--force", is_flag=True, help="Replace an existing --out file even if it is not a faceaudit report.")
def report(report_json: Path, out_html: Path | None, fmt: str, force: bool) -> None:
    """Re-render the HTML report (or its Markdown summary) from REPORT_JSON without recomputing anything.

    The same JSON always gives the same HTML (and Markdown), byte for byte. An
    existing file is replaced only if it is a faceaudit report of the same
    format (or with --force), never the input itself.
    """
    from faceaudit.report.rerender import rerender

    target = rerender(report_json, out_html, fmt=fmt, force=force)
    _echo(f"{'md' if fmt == 'md' else 'report'}: {target}")


@main.command(epilog="\b\nExample:\n  faceaudit demo --out faceaudit-demo && open faceaudit-demo/report.html")
@click.option("--out", "out_dir", default=Path("faceaudit-demo"), show_default=True,
              type=click.Path(path_type=Path), help="Folder for the phantom data, the model and the report.")
@click.option("--seed", default=0, show_default=True)
def demo(out_dir: Path, seed: int) -> None:
    """Run a complete audit with nothing of your own: phantom faces and a small face CNN.

    Generates procedurally drawn faces whose age, sex and yaw are known, trains
    a small face-recognition CNN on them for identity, exports it to ONNX and
    audits it through the same path as `faceaudit run` (report.html), then
    follows the final layer across the CNN's training checkpoints
    (trend/trend.html), the paper's experiment in miniature. About three
    minutes on a 2-core CPU; assets are reused on a rerun.
    """
    from faceaudit.demo.run import run_demo

    outcome = run_demo(out_dir, seed=seed)
    _print_outcome(outcome)
    if outcome.trend is not None:
        _echo(f"trend:  {outcome.trend.html_path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = [
    "EXIT_FINDINGS",
    "compare",
    "demo",
    "layers",
    "main",
    "plugins",
    "report",
    "run",
    "spec",
    "trend",
]
