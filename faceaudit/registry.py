"""Plugin discovery through entry points.

The core registers its own backends and estimators in the same entry-point
groups (`faceaudit.backends`, `faceaudit.estimators`) that third-party plugins
use, so a plugin is a first-class citizen. Code is only ever imported by an
installed entry point, never from a string a user typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from faceaudit.errors import PluginError, did_you_mean

BACKENDS = "faceaudit.backends"
ESTIMATORS = "faceaudit.estimators"


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin: its group, name, target and distribution."""

    group: str
    name: str
    value: str
    distribution: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "group": self.group,
            "name": self.name,
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
        }


def list_plugins(group: str) -> list[PluginInfo]:
    """All entry points installed in `group`, sorted by name."""
    out = []
    for ep in entry_points(group=group):
        dist = getattr(ep, "dist", None)
        out.append(
            PluginInfo(
                group=group,
                name=ep.name,
                value=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "?",
            )
        )
    return sorted(out, key=lambda p: p.name)


def provider_of(group: str, obj: Any) -> PluginInfo | None:
    """The installed entry point of `group` that registers `obj` (a class or function), or None.

    Why: a report, and an error about a broken backend, must name the package and
    version that provided the code, so an audit can be reproduced and a bug reported
    to the right maintainers. Matched by the entry point's `module:qualname` target,
    so no plugin code is imported.
    """
    target = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
    for info in list_plugins(group):
        if info.value.replace(" ", "") == target:
            return info
    return None


def load_plugin(group: str, name: str) -> Any:
    """Load the object registered as `name` in `group`, or raise a PluginError."""
    eps = {ep.name: ep for ep in entry_points(group=group)}
    if name not in eps:
        kind = "backend" if group == BACKENDS else "estimator"
        raise PluginError(
            f"Unknown {kind} {name!r}. Installed: {', '.join(sorted(eps)) or 'none'}."
            f"{did_you_mean(name, eps)} Run `faceaudit plugins` to list them."
        )
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must not look like a core bug
        raise PluginError(
            f"The {name!r} plugin ({eps[name].value}) failed to load: {exc}. "
            "Reinstall it or uninstall the package that provides it."
        ) from exc

__all__ = [
    "BACKENDS",
    "ESTIMATORS",
    "PluginInfo",
    "list_plugins",
    "load_plugin",
    "provider_of",
]
