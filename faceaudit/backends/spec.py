"""Where a model's input spec comes from: flags, a sidecar file, the model's metadata, or the default.

Precedence, highest first: what the user states (CLI flags, `open_model`
keywords, `--input-spec MODEL=FILE`), a sidecar file next to the model
(``model.onnx.faceaudit.json``), the model's own metadata
(``faceaudit.input_spec``), what the model file shows (its input shape), and
the ArcFace default. A team writes the sidecar once (`faceaudit spec MODEL ...
--write`) and every later audit of that file reads it; `--embed` puts the same
JSON into the ONNX file's metadata instead. Writing never follows a link and
never replaces a file that is not a faceaudit input spec.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceaudit.backends.base import SPEC_KEYS, Backend, InputSpec, _normalised, parse_spec_json
from faceaudit.errors import ModelError, OutputError

#: Appended to the model's file name: model.onnx -> model.onnx.faceaudit.json
SIDECAR_SUFFIX = ".faceaudit.json"
#: Marker written into every sidecar, so faceaudit knows a file it may replace.
SIDECAR_FORMAT = "faceaudit-input-spec"
#: ONNX metadata key (also the TorchScript extra file) holding the spec as JSON.
METADATA_KEY = "faceaudit.input_spec"
#: Order in which sources win, highest first.
SOURCES = ("flag", "sidecar", "metadata", "model", "default")
#: Largest sidecar read (a spec is a few hundred bytes).
_MAX_SIDECAR_BYTES = 64 * 1024


def sidecar_path(model_path: str | Path) -> Path:
    """The sidecar file of `model_path`: the same name with `.faceaudit.json` appended."""
    p = Path(model_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def parse_input_size(value: Any, source: str = "input_size") -> dict[str, int]:
    """`"112x96"` (height x width), `"112"`, `112` or `(112, 96)` -> {"height": ..., "width": ...}."""
    if isinstance(value, str):
        parts = re.split(r"\s*[xX×,]\s*", value.strip())
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ModelError(f"{source}: give the input size as HEIGHTxWIDTH (e.g. 112x112) or one number, got {value!r}.")
    return _normalised({"height": parts[0], "width": parts[1]}, source)


def spec_overrides(*, channel_order: Any = None, mean: Any = None, std: Any = None, input_size: Any = None,
                   height: Any = None, width: Any = None, layout: Any = None,
                   names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The stated input-spec keys (None = not stated), validated one by one.

    `names` maps each key to what the user typed it as (e.g. {"std": "--std"}),
    so an error names the flag on the command line and the keyword in Python.
    """
    names = dict(names or {})
    out: dict[str, Any] = {}
    if input_size is not None:
        out.update(parse_input_size(input_size, names.get("input_size", "input_size")))
    given = {"height": height, "width": width, "layout": layout, "channel_order": channel_order,
             "mean": mean, "std": std}
    for key, value in given.items():
        if value is not None:
            out.update(_normalised({key: value}, names.get(key, key)))
    return out


def _read_small(path: Path, what: str) -> str:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{what} {path} is not a regular file; remove it or replace it with a JSON file.")
        if st.st_size > _MAX_SIDECAR_BYTES:
            raise ModelError(f"{what} {path} is {st.st_size} bytes, too large for an input spec; fix or remove it.")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{what} {path} is not UTF-8 text ({exc}); fix or remove it.") from exc
    except OSError as exc:
        raise ModelError(f"Cannot read {what} {path}: {exc.strerror}.") from exc


def read_spec_file(path: str | Path, what: str = "input-spec file") -> dict[str, Any]:
    """The validated keys of a spec file (a JSON object with some of height, width, layout, channel_order, mean,
    std, and optionally "format": "faceaudit-input-spec"); a ModelError naming the file otherwise."""
    p = Path(path)
    text = _read_small(p, what)
    source = f"{what} {p}"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{source} is not valid JSON ({exc}); fix it or remove it.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{source} must hold a JSON object such as {{\"channel_order\": \"BGR\"}}, "
                         f"got {type(data).__name__}; fix it or remove it.")
    fmt = data.pop("format", SIDECAR_FORMAT)
    if fmt != SIDECAR_FORMAT:
        raise ModelError(f"{source}: \"format\" must be {SIDECAR_FORMAT!r}, got {fmt!r}; fix it or remove it.")
    return parse_spec_json(json.dumps(data), source)


def read_sidecar(model_path: str | Path) -> dict[str, Any]:
    """The keys of the model's sidecar file, or {} when there is none."""
    side = sidecar_path(model_path)
    if not os.path.lexists(side):
        return {}
    return read_spec_file(side, "sidecar")


def apply_spec(model: Backend, stated: Mapping[str, Any], sidecar: Mapping[str, Any], source: str) -> Backend:
    """Put the sidecar's keys, then the stated ones, on top of the spec the backend found; record the sources.

    Backends already receive these keys as options; applying them again here is
    what makes a plugin that ignores them honour them too.
    """
    merged = {**sidecar, **stated}
    if merged:
        model._input_spec = model.input_spec.with_overrides(source=source, **merged)
    model._input_spec_sources.update(dict.fromkeys(sidecar, "sidecar"))
    model._input_spec_sources.update(dict.fromkeys(stated, "flag"))
    return model


def spec_source(model: Backend) -> str:
    """The highest-precedence source of any key of the model's spec (flag > sidecar > metadata > model > default)."""
    found = set(model.input_spec_sources.values())
    return next(s for s in SOURCES if s in found or s == "default")


def spec_report(model: Backend) -> dict[str, Any]:
    """The spec in use as report JSON: its keys, `source` (the highest one that set any key) and `sources` per key."""
    return {**model.input_spec.to_dict(), "source": spec_source(model), "sources": model.input_spec_sources}


def spec_json(spec: InputSpec) -> str:
    """The sidecar / metadata JSON of a spec (all keys, sorted, with the format marker)."""
    return json.dumps({"format": SIDECAR_FORMAT, **spec.to_dict()}, indent=1, sort_keys=True) + "\n"


def _refuse_link(path: Path, what: str) -> None:
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; faceaudit does not write through links. Remove the link "
                          f"or write the {what} elsewhere.")


def write_sidecar(model_path: str | Path, spec: InputSpec) -> Path:
    """Write `spec` as the model's sidecar (atomically), replacing only an existing faceaudit sidecar."""
    from faceaudit._atomic import atomic_write_text

    side = sidecar_path(model_path)
    _refuse_link(side, "sidecar")
    if side.exists():
        try:
            read_spec_file(side, "sidecar")
        except ModelError as exc:
            raise OutputError(
                f"{side} exists and is not a valid faceaudit input spec, so it is left alone ({exc}). Move it away "
                "and write the sidecar again."
            ) from exc
    atomic_write_text(side, spec_json(spec))
    return side


def embed_onnx(model_path: str | Path, spec: InputSpec, out: str | Path | None = None, *,
               in_place: bool = False) -> Path:
    """Write a copy of the ONNX model at `out` (or replace the model itself when `in_place`) carrying `spec`
    as the metadata `faceaudit.input_spec`. `out` must not exist; neither may be a link. Why: a spec inside
    the file travels with it (no sidecar to lose), but rewriting a model is never done silently."""
    import onnx

    from faceaudit._atomic import atomic_write_bytes

    src = Path(model_path)
    if src.suffix.lower() != ".onnx":
        raise ModelError(f"Embedding the input spec works for ONNX models only; {src.name} is not one. "
                         "Write a sidecar instead (--write).")
    if (out is None) == (not in_place):
        raise ModelError("Embedding needs a new file to write (--out NEW.onnx) or, to change the model itself, "
                         "--in-place; give exactly one.")
    target = src if in_place else Path(out)  # type: ignore[arg-type]
    _refuse_link(target, "model")
    if not in_place:
        if os.path.lexists(target):
            raise OutputError(f"{target} exists; faceaudit does not overwrite it. Choose a new file name.")
        if target.resolve() == src.resolve():
            raise OutputError(f"{target} is the model itself; pass --in-place to change the model.")
    try:
        proto = onnx.load(str(src), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{src} is not a readable ONNX model ({type(exc).__name__}: {exc}).") from exc
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    if external and target.resolve().parent != src.resolve().parent:
        raise ModelError(f"{src} keeps its weights in external-data files; write the new model into the same folder "
                         f"({src.parent}) so it still finds them.")
    props = {p.key: p.value for p in proto.metadata_props if p.key != METADATA_KEY}
    props[METADATA_KEY] = json.dumps({k: v for k, v in spec.to_dict().items() if k in SPEC_KEYS}, sort_keys=True)
    onnx.helper.set_model_props(proto, props)
    atomic_write_bytes(target, proto.SerializeToString())
    return target

__all__ = [
    "METADATA_KEY",
    "SIDECAR_FORMAT",
    "SIDECAR_SUFFIX",
    "SOURCES",
    "apply_spec",
    "embed_onnx",
    "parse_input_size",
    "read_sidecar",
    "read_spec_file",
    "sidecar_path",
    "spec_json",
    "spec_overrides",
    "spec_report",
    "spec_source",
    "write_sidecar",
]
