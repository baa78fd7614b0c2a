"""The backend contract: what every model backend (built-in or plugin) provides.

A backend opens one model file, lists its layers under the model's own names,
describes the input it expects, and turns an already preprocessed batch into
pooled per-layer feature vectors. Everything above this module (feature
extraction, the audit) speaks only this contract, so a plugin backend is used
exactly like the built-in ONNX and PyTorch ones.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from faceaudit.errors import BackendError, InputError, ModelError, did_you_mean, on_command_line

#: Name under which every backend exposes the model input as a probe-able layer.
INPUT_KIND = "Input"

LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
#: Keys of an input spec (ONNX metadata, sidecar file, open_model keywords).
SPEC_KEYS = ("height", "width", "layout", "channel_order", "mean", "std")
#: Largest height or width accepted: a batch of 64 such images is already about 3 GB of float32.
MAX_INPUT_SIDE = 2048


def _side(value: Any, key: str, source: str) -> int:
    """A positive whole number of pixels, at most MAX_INPUT_SIDE."""
    v: int | None = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        v = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        v = int(value.strip())
    if v is None or v <= 0:
        raise ModelError(f"{source}: {key} must be a positive whole number of pixels, got {value!r}.")
    if v > MAX_INPUT_SIDE:
        raise ModelError(
            f"{source}: {key} {v} is larger than {MAX_INPUT_SIDE} pixels, far beyond any face model's input "
            f"(ArcFace 112, FaceNet 160); a batch of such images would not fit in memory. Fix the {key} of the "
            "input spec."
        )
    return v


def _choice(value: Any, key: str, allowed: tuple[str, ...], source: str) -> str:
    """One of `allowed`, case-insensitive, returned in upper case."""
    text = value.strip().upper() if isinstance(value, str) else None
    if text not in allowed:
        raise ModelError(f"{source}: {key} must be {' or '.join(allowed)} (any case), got {value!r}.")
    return text  # type: ignore[return-value]


def _triple(value: Any, what: str, source: str) -> tuple[float, float, float]:
    """One number or three (one per channel), as three finite floats."""
    vals: tuple[float, ...] = ()
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        vals = (float(value),) * 3
    elif isinstance(value, (list, tuple, np.ndarray)):
        try:
            vals = tuple(float(v) for v in value if not isinstance(v, (bool, np.bool_)))
        except (TypeError, ValueError):
            vals = ()
        if len(vals) != len(value):
            vals = ()
        if len(vals) == 1:
            vals = vals * 3
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise ModelError(
            f"{source}: {what} must be one finite number or three (one per channel, in R, G, B order), "
            f"got {value!r}."
        )
    return vals  # type: ignore[return-value]


def _normalised(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate every input-spec key and return them in canonical form (upper case, ints, float triples)."""
    unknown = sorted(set(values) - set(SPEC_KEYS))
    if unknown:
        raise ModelError(f"{source}: unknown input-spec key(s) {unknown}; the keys are {', '.join(SPEC_KEYS)}.")
    out = dict(values)
    for key in ("height", "width"):
        if key in out:
            out[key] = _side(out[key], key, source)
    if "layout" in out:
        out["layout"] = _choice(out["layout"], "layout", LAYOUTS, source)
    if "channel_order" in out:
        out["channel_order"] = _choice(out["channel_order"], "channel_order", CHANNEL_ORDERS, source)
    if "mean" in out:
        out["mean"] = _triple(out["mean"], "mean", source)
    if "std" in out:
        std = _triple(out["std"], "std", source)
        if any(s <= 0 for s in std):
            raise ModelError(
                f"{source}: std must be greater than 0 (the input is (pixel - mean) / std), got {values['std']!r}."
            )
        out["std"] = std
    return out


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: model_input = (pixel_0_255 - mean) / std, in `layout` and `channel_order`.

    The defaults are the ArcFace convention (112x112, RGB, mean 127.5, std 127.5),
    which most open face-recognition models follow. Every construction is
    validated (a plugin building one directly included): layout NCHW or NHWC and
    channel_order RGB or BGR in any case (stored in upper case), sizes whole
    numbers from 1 to `MAX_INPUT_SIDE`, mean finite, std finite and above 0;
    anything else raises `ModelError`. mean and std are given in R, G, B order
    whatever the channel order.
    """

    height: int = 112
    width: int = 112
    layout: str = "NCHW"
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)

    def __post_init__(self) -> None:
        values = {k: getattr(self, k) for k in SPEC_KEYS}
        for key, value in _normalised(values, "InputSpec").items():
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "layout": self.layout,
            "channel_order": self.channel_order,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def with_overrides(self, source: str = "options", **overrides: Any) -> "InputSpec":
        """Return a copy with the non-None `overrides` applied and validated (errors name `source`)."""
        given = _normalised({k: v for k, v in overrides.items() if v is not None}, source)
        return replace(self, **given)

    @classmethod
    def from_json(cls, text: str, source: str, base: "InputSpec | None" = None) -> "InputSpec":
        """Parse the JSON form (the `faceaudit.input_spec` metadata) on top of `base`."""
        return (base or cls()).with_overrides(source=source, **parse_spec_json(text, source))


def parse_spec_json(text: str, source: str) -> dict[str, Any]:
    """The keys of a JSON input spec (metadata or sidecar), validated; raises ModelError naming `source`."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{source}: the input spec is not valid JSON ({exc}); fix or remove it.") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{source}: the input spec must be a JSON object, got {type(data).__name__}.")
    return _normalised(data, source)


@dataclass(frozen=True)
class LayerInfo:
    """One probe-able layer: its name as the model names it, its kind (op or module class) and output shape.

    `shape` includes the batch dimension as None; other dimensions may be None when
    the model leaves them symbolic. `index` is the layer's position in
    `Backend.layers()` (execution order, the input at 0).
    """

    name: str
    kind: str
    shape: tuple[int | None, ...] | None
    index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape) if self.shape is not None else None,
            "index": self.index,
        }


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class Backend:
    """Base class of a model opened by a backend.

    Subclasses set `name` and `suffixes`, fill `self._layers`, `self._input_spec`
    and `self._final`, and implement `_run(batch, names) -> {name: raw array}` for
    non-input layers. Validation of layer names, the input layer and pooling are
    handled here once for all backends, and so is the check of what `_run`
    returns (every requested layer, one row per image, finite values): a backend
    that breaks it raises `BackendError` naming its package and version.

    The first layer is the model input *as faceaudit feeds it*: the preprocessed
    batch (N, 3, H, W) (or (N, H, W, 3) for NHWC) described by `input_spec`,
    whatever shape the backend declares for it; `_run` is never asked for it.
    Backends that also subclass `PrecomputedFeatures` run no model and have no input layer.
    """

    name: ClassVar[str] = "base"
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | Path, **options: Any) -> None:
        self.path = Path(path)
        self.options: dict[str, Any] = dict(options)
        self._layers: list[LayerInfo] = []
        self._input_spec = InputSpec()
        self._input_spec_sources: dict[str, str] = {}  # key -> "metadata" | "sidecar" | "flag"; see input_spec_sources
        self._final = ""
        self._sha256: str | None = None

    # -- contract -------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.name

    @property
    def sha256(self) -> str:
        """SHA-256 of the model file (the main file only, not external-data files)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    @property
    def input_spec(self) -> InputSpec:
        return self._input_spec

    @property
    def input_spec_sources(self) -> dict[str, str]:
        """Where each input-spec key came from: flag, sidecar, metadata, model (the file's input shape or the
        backend itself) or default. Why: a report must say whether its pixels were fed as the model wants."""
        default = InputSpec()
        return {
            k: self._input_spec_sources.get(
                k, "default" if getattr(self._input_spec, k) == getattr(default, k) else "model")
            for k in SPEC_KEYS
        }

    @property
    def final_layer(self) -> str:
        """The (batch, dim) face-embedding layer; a backend that leaves it unset or unknown is a bug."""
        if not self._final or all(l.name != self._final for l in self._layers):
            raise self.contract_error(
                f"set no valid final layer (final layer {self._final!r}, layers: "
                f"{', '.join(l.name for l in self._layers[:8]) or 'none'})"
            )
        return self._final

    @property
    def input_layer(self) -> str:
        return self._layers[0].name

    @property
    def provenance(self) -> dict[str, str]:
        """{"backend", "package", "version"}: who provides this backend, recorded in every report."""
        return backend_provenance(type(self))

    def contract_error(self, what: str) -> BackendError:
        """A BackendError saying that this backend `what`, naming its package and version."""
        return BackendError(backend_bug_message(type(self), what, self.path))

    def layers(self) -> list[LayerInfo]:
        """All probe-able layers in execution order; the first is the model input as faceaudit feeds it."""
        layers = list(self._layers)
        if layers and not isinstance(self, PrecomputedFeatures):
            layers[0] = replace(layers[0], shape=self._image_shape())
        return layers

    def _image_shape(self) -> tuple[int | None, ...]:
        spec = self._input_spec
        if spec.layout == "NHWC":
            return (None, spec.height, spec.width, 3)
        return (None, 3, spec.height, spec.width)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers():
            if info.name == name:
                return info
        raise ModelError(
            f"{self.path.name} has no layer {name!r}.{did_you_mean(name, [l.name for l in self._layers])} "
            f"Run `faceaudit layers {self.path}` to list them."
        )

    def extract(
        self, batch: np.ndarray, layers: Sequence[str], pooling: str = "avg"
    ) -> dict[str, np.ndarray]:
        """Run one preprocessed batch and return {layer: float32 (batch, dim)}, pooled.

        `batch` is float32 in the model's own layout (see `input_spec`). All
        requested layers come from one forward pass.
        """
        from faceaudit.backends.pooling import parse_pooling, pool

        names = list(dict.fromkeys(layers))
        if not names:
            raise InputError("extract() needs at least one layer name; use select_layers(model, 'auto').")
        for n in names:
            self.layer(n)
        arr = self._check_batch(batch)
        inner = [n for n in names if n != self.input_layer]
        parse_pooling(pooling)
        pooled = self._run_pooled(arr, inner, pooling) if inner else {}
        check_features(self, pooled, inner, len(arr))
        out: dict[str, np.ndarray] = {}
        for n in names:
            if n == self.input_layer:
                out[n] = pool(arr, pooling, channels_last=self._input_spec.layout == "NHWC", is_input=True)
            else:
                out[n] = pooled[n]
        return out

    # -- helpers for subclasses ---------------------------------------------
    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        arr = np.asarray(batch)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        spec = self._input_spec
        expect = (
            (3, spec.height, spec.width) if spec.layout == "NCHW" else (spec.height, spec.width, 3)
        )
        if arr.ndim != 4 or tuple(arr.shape[1:]) != expect:
            raise InputError(
                f"{self.path.name} expects a batch of shape (N, {', '.join(map(str, expect))}) "
                f"({spec.layout}), got {tuple(arr.shape)}. Preprocess images with "
                "faceaudit.data.preprocess.PreprocessSpec.from_input_spec(model.input_spec)."
            )
        return arr

    def _run(self, batch: np.ndarray, names: list[str]) -> Mapping[str, np.ndarray]:
        """Raw outputs (batch first, any shape) of the non-input layers `names`, from one forward pass."""
        raise NotImplementedError

    def _run_pooled(self, batch: np.ndarray, names: list[str], pooling: str) -> dict[str, np.ndarray]:
        """Pooled float32 (batch, dim) outputs; backends that can pool on their device override this."""
        from faceaudit.backends.pooling import pool

        raw = self._run(batch, names)
        if not isinstance(raw, Mapping):
            raise self.contract_error(f"returned {type(raw).__name__} from _run instead of {{layer name: array}}")
        out = {}
        for n in names:
            if n not in raw:
                continue  # reported by check_features, with every missing layer named
            value = np.asarray(raw[n])
            if value.dtype.kind not in "fiub":
                raise self.contract_error(
                    f"returned an array of dtype {value.dtype} for layer {n!r}; layers must be numeric arrays"
                )
            out[n] = pool(value, pooling)
        return out

    def _check_final(self, declared: str | None) -> None:
        """Require a 2-D (batch, dim) final layer, or the one named by final_layer=."""
        if declared:
            self.layer(declared)
            self._final = declared
            return
        if not self._final or all(l.name != self._final for l in self._layers):
            raise self.contract_error(f"set its final layer to {self._final!r}, which is not one of its layers")
        shape = self.layer(self._final).shape
        if shape is not None and len(shape) != 2:
            two_d = [l.name for l in self._layers if l.shape is not None and len(l.shape) == 2]
            hint = f" 2-D layers: {', '.join(two_d[-3:])}." if two_d else ""
            fix = (
                "Re-export the model with a flattened (batch, dim) embedding as its last output"
                if on_command_line()
                else "Pass final_layer=NAME to open_model (backend_options={'final_layer': NAME} in an AuditConfig) "
                "to name the embedding layer, or re-export the model with a flattened embedding output"
            )
            raise ModelError(
                f"{self.path}: the model output {self._final!r} has shape {list(shape)}, but faceaudit needs a "
                f"(batch, dim) face embedding as the final output. {fix}.{hint}"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} ({len(self._layers)} layers)>"


class PrecomputedFeatures(abc.ABC):
    """Optional backend capability: features computed elsewhere, looked up by image path.

    A backend declares it by subclassing this beside `Backend` and implementing
    `lookup`; feature extraction then looks rows up instead of decoding images,
    and the backend has no input layer and no input spec to check.
    """

    @abc.abstractmethod
    def lookup(self, paths: Sequence[str], layers: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({layer: float32 (n_found, dim)}, found mask (len(paths),) bool): the rows of `paths` the backend holds."""


def backend_provenance(cls: type) -> dict[str, str]:
    """{"backend", "package", "version"} of a backend class, from its installed entry point.

    A class that no installed entry point registers (e.g. one instantiated in a
    test before its package is installed) is reported as package "unregistered".
    """
    from faceaudit import registry

    info = registry.provider_of(registry.BACKENDS, cls)
    if info is None:
        return {"backend": str(getattr(cls, "name", cls.__name__)), "package": "unregistered", "version": "?"}
    return {"backend": info.name, "package": info.distribution, "version": info.version}


def backend_bug_message(cls: type, what: str, path: str | Path | None = None) -> str:
    """The one wording of a backend contract violation: which backend, which package, and whom to tell."""
    p = backend_provenance(cls)
    where = f" on {Path(path).name}" if path is not None else ""
    return (
        f"the {p['backend']!r} backend (package {p['package']} {p['version']}) {what}{where}. "
        f"This is a bug in that backend, not a problem with your input: report it to the maintainers of "
        f"{p['package']}, or use another backend (--backend)."
    )


def check_opened(model: "Backend") -> None:
    """Refuse a just-opened model that breaks the contract: no layers, no valid final layer, no InputSpec."""
    if not isinstance(model, Backend):
        raise BackendError(backend_bug_message(type(model), f"returned {type(model).__name__}, not a Backend"))
    if not model._layers or not all(isinstance(l, LayerInfo) for l in model._layers):
        raise model.contract_error("listed no layers (self._layers must be a non-empty list of LayerInfo)")
    if not isinstance(model.input_spec, InputSpec):
        raise model.contract_error(f"describes its input with {type(model.input_spec).__name__}, not an InputSpec")
    if getattr(type(model), "precomputed", None) is True and not isinstance(model, PrecomputedFeatures):
        raise model.contract_error(
            "sets the class attribute precomputed = True, which faceaudit no longer reads; declare precomputed "
            "features by subclassing faceaudit.backends.PrecomputedFeatures (and implementing lookup)"
        )
    model.final_layer  # noqa: B018 - raises when unset or unknown


def check_features(model: "Backend", out: Any, names: Sequence[str], n_rows: int) -> None:
    """Refuse backend output that breaks the contract: every layer in `names`, float32 (n_rows, dim), finite.

    Why: features enter faceaudit here; a backend that leaves out a layer, returns
    the wrong number of rows or NaN would otherwise surface as a KeyError, as the
    user's input error, or not at all (a silently wrong audit).
    """
    if not isinstance(out, Mapping):
        raise model.contract_error(f"returned {type(out).__name__} instead of {{layer name: array}}")
    missing = [n for n in names if n not in out]
    if missing:
        raise model.contract_error(f"left out the requested layer(s) {', '.join(map(repr, missing))}")
    for n in names:
        arr = out[n]
        if not isinstance(arr, np.ndarray) or arr.ndim != 2:
            shape = list(arr.shape) if hasattr(arr, "shape") else type(arr).__name__
            raise model.contract_error(f"returned {shape} for layer {n!r} instead of a 2-D (images, dim) array")
        if arr.shape[0] != n_rows:
            raise model.contract_error(
                f"returned {arr.shape[0]} rows for layer {n!r} for a batch of {n_rows} images (one row per image)"
            )
        if arr.dtype != np.float32:
            raise model.contract_error(f"returned dtype {arr.dtype} for layer {n!r} instead of float32")
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            raise model.contract_error(f"returned NaN or infinite values for layer {n!r} ({bad} of {n_rows} rows)")


@dataclass(frozen=True)
class BackendInfo:
    """One installed backend: entry-point name, suffixes it opens, where it comes from."""

    name: str
    suffixes: tuple[str, ...]
    value: str
    distribution: str
    version: str
    error: str | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "suffixes": list(self.suffixes),
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
        }

__all__ = [
    "Backend",
    "BackendInfo",
    "CHANNEL_ORDERS",
    "INPUT_KIND",
    "InputSpec",
    "LAYOUTS",
    "LayerInfo",
    "MAX_INPUT_SIDE",
    "PrecomputedFeatures",
    "SPEC_KEYS",
    "backend_bug_message",
    "backend_provenance",
    "check_features",
    "check_opened",
    "file_sha256",
    "parse_spec_json",
]
