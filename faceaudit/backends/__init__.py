"""Model backends: open a model file, list its layers, extract pooled features.

Backends are found through the `faceaudit.backends` entry-point group; the
built-in ONNX and PyTorch backends are registered there exactly like plugins.
A backend is picked by file suffix (each backend class declares `suffixes`) or
by explicit name. Importing this package does not import torch or onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceaudit import registry
from faceaudit.backends.base import (
    Backend,
    BackendInfo,
    InputSpec,
    LayerInfo,
    PrecomputedFeatures,
    backend_provenance,
    check_features,
    check_opened,
    file_sha256,
)
from faceaudit.backends.pooling import FLATTEN_MAX_DIM, POOLINGS, parse_pooling, pool, pooled_dim
from faceaudit.backends.selection import layer_table, select_layers
from faceaudit.errors import ModelError, PluginError, option

__all__ = [
    "Backend",
    "BackendInfo",
    "FLATTEN_MAX_DIM",
    "InputSpec",
    "LayerInfo",
    "Model",
    "POOLINGS",
    "PrecomputedFeatures",
    "backend_for_path",
    "backend_provenance",
    "check_features",
    "file_sha256",
    "get_backend",
    "layer_table",
    "list_backends",
    "open_model",
    "parse_pooling",
    "pool",
    "pooled_dim",
    "select_layers",
]

#: The type returned by open_model (every backend subclasses it).
Model = Backend


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under `name` in the `faceaudit.backends` entry-point group."""
    cls = registry.load_plugin(registry.BACKENDS, name)
    if not isinstance(cls, type) or not hasattr(cls, "suffixes"):
        raise PluginError(
            f"The backend plugin {name!r} does not provide a backend class with `suffixes`; "
            "see 'Writing a backend plugin' in the README."
        )
    return cls


def list_backends() -> list[BackendInfo]:
    """Installed backends with the suffixes they open (for `faceaudit plugins`); broken ones carry `error`."""
    out = []
    for info in registry.list_plugins(registry.BACKENDS):
        try:
            suffixes = tuple(get_backend(info.name).suffixes)
            err = None
        except PluginError as exc:
            suffixes, err = (), str(exc)
        out.append(BackendInfo(info.name, suffixes, info.value, info.distribution, info.version, err))
    return out


def backend_for_path(path: str | Path) -> str:
    """Name of the installed backend whose suffixes match `path`; the longest matching suffix wins.

    `.pcaface.npz` thus goes to the backend that declares `.pcaface.npz`, not to one
    that opens any `.npz`. Two different backends matching with equally long
    suffixes are ambiguous: a ModelError names both and asks for an explicit backend.
    """
    lower = Path(path).name.lower()
    best: dict[str, tuple[int, BackendInfo]] = {}
    known: list[str] = []
    for info in list_backends():
        known.extend(info.suffixes)
        for suf in info.suffixes:
            if suf and lower.endswith(suf.lower()) and len(suf) > best.get(info.name, (0, info))[0]:
                best[info.name] = (len(suf), info)
    if not best:
        raise ModelError(
            f"No installed backend opens {Path(path).name!r} (known suffixes: {', '.join(sorted(set(known)))}). "
            f"Pass {option('--backend NAME', 'backend=NAME')}, or install a backend plugin for this format."
        )
    longest = max(n for n, _ in best.values())
    top = sorted((info for n, info in best.values() if n == longest), key=lambda i: i.name)
    if len({i.value for i in top}) > 1:
        who = " and ".join(f"{i.name!r} (package {i.distribution} {i.version})" for i in top)
        raise ModelError(
            f"{Path(path).name!r} matches the backends {who} with equally long suffixes. Pass backend=NAME "
            f"(--backend NAME), e.g. --backend {top[0].name}, or uninstall one of the packages."
        )
    return top[0].name


def open_model(path: str | Path, backend: str | None = None, *, channel_order: str | None = None,
               mean: Any = None, std: Any = None, input_size: Any = None, sidecar: bool = True,
               **options: Any) -> Backend:
    """Open a model file with the backend named `backend`, or the one its suffix selects.

    The input spec is, key by key, what is stated here (`channel_order` "RGB" or
    "BGR"; `mean`, `std`: one number or three, in R, G, B order; `input_size`
    "HxW", one number or (height, width); `height`, `width`, `layout` as
    options), else the sidecar file `MODEL.faceaudit.json` when `sidecar` is
    True, else the model's metadata, else the default; `model.input_spec_sources`
    says which. Other `options` go to the backend (e.g. device="cpu",
    final_layer=..., factory= for PyTorch).
    """
    from faceaudit.backends.spec import apply_spec, read_sidecar, spec_overrides

    p = Path(path)
    if not p.exists():
        raise ModelError(f"Model file {p} does not exist. Check the path.")
    stated = spec_overrides(
        channel_order=channel_order, mean=mean, std=std, input_size=input_size,
        height=options.pop("height", None), width=options.pop("width", None), layout=options.pop("layout", None),
    )
    side = read_sidecar(p) if sidecar else {}
    cls = get_backend(backend) if backend else get_backend(backend_for_path(p))
    model = cls(p, **options, **{**side, **stated})
    model = apply_spec(model, stated, side, f"input spec for {p.name}")
    check_opened(model)
    return model
