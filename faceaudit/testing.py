"""Conformance checks for backend plugins, the way scikit-learn's `check_estimator` serves estimator authors.

A backend plugin's own test suite calls, in one line::

    from faceaudit.testing import check_backend
    check_backend(MyBackend, "tests/tiny.mymodel")

and learns whether faceaudit can use the backend the way it uses its built-in
ONNX and PyTorch ones: the package registers it, the layer table tells the truth
about what extraction returns, every batch comes back as finite float32 rows
(one per image), results repeat, the input spec is valid, the final embedding
layer is set, and a file that is not a model is refused with a FaceAuditError.
The checks use faceaudit's real preprocessing and registry, nothing mocked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from faceaudit.backends import (
    FLATTEN_MAX_DIM,
    Backend,
    InputSpec,
    PrecomputedFeatures,
    backend_for_path,
    check_features,
    get_backend,
    layer_table,
)
from faceaudit.backends.base import check_opened
from faceaudit.errors import BackendError, FaceAuditError
from faceaudit.registry import BACKENDS, provider_of

#: The checks `check_backend` runs, in order.
CHECKS = (
    "registration", "open", "input_spec", "layers", "final_layer", "layer_table", "rows_and_dtype",
    "determinism", "wrong_file",
)
#: Batch sizes every backend must answer with one row per image.
BATCH_SIZES = (1, 7)
#: Image batches are expected to give the same features whatever the batch size, up to float rounding.
_RTOL, _ATOL = 1e-3, 1e-4


class BackendCheckError(AssertionError):
    """A backend failed one conformance check; the message names the check and what to fix."""


def _fail(check: str, cls: type, message: str) -> BackendCheckError:
    return BackendCheckError(f"check_backend({cls.__name__}) [{check}]: {message}")


def check_backend(
    backend_cls: type[Backend],
    model_path: str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
    paths: Sequence[str] | None = None,
) -> list[str]:
    """Run every conformance check on `backend_cls` with the small real model file `model_path`.

    Why: a plugin is a first-class citizen only if it keeps the backend contract;
    this states the contract as code, so a plugin author finds a broken promise
    in their own tests instead of a user finding it in an audit. `options` go to
    the backend's constructor (e.g. ``{"factory": build}``). Precomputed backends
    (subclasses of `PrecomputedFeatures`) are checked through ``lookup(paths, layers)``, so
    they need `paths`: at least 7 image paths the file holds features for.

    Returns the names of the checks passed (`CHECKS`); raises `BackendCheckError`
    (an AssertionError, so pytest shows it as a test failure) at the first failure.
    """
    cls = backend_cls
    path = Path(model_path)
    opts = dict(options or {})
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise _fail("registration", type(cls), f"{cls!r} is not a subclass of faceaudit.backends.Backend.")
    _check_registration(cls, path)
    try:
        model = cls(path, **opts)
        check_opened(model)
    except BackendError as exc:
        raise _fail("open", cls, str(exc)) from exc
    except FaceAuditError as exc:
        raise _fail("open", cls, f"the model file {path} was refused: {exc}") from exc
    _check_input_spec(cls, model)
    names = _check_layers(cls, model)
    _check_final(cls, model, names)
    if issubclass(cls, PrecomputedFeatures):
        if not paths or len(paths) < max(BATCH_SIZES):
            raise _fail("layer_table", cls, f"a precomputed backend is checked through lookup(); pass paths= with "
                                            f"at least {max(BATCH_SIZES)} image paths that {path.name} holds.")
        run: Callable[[int, str], dict[str, np.ndarray]] = lambda n, pooling: _lookup(cls, model, paths[:n], names)
    else:
        batch = _faces(model.input_spec, max(BATCH_SIZES))
        run = lambda n, pooling: _extract(cls, model, batch[:n], names, pooling)
    _check_table(cls, model, names, run)
    results = {n: run(n, "avg") for n in BATCH_SIZES}
    _check_determinism(cls, names, results, run)
    _check_wrong_file(cls, path, opts)
    return list(CHECKS)


# --------------------------------------------------------------------------- the checks


def _check_registration(cls: type[Backend], path: Path) -> None:
    info = provider_of(BACKENDS, cls)
    target = f"{cls.__module__}:{cls.__qualname__}"
    if info is None:
        raise _fail("registration", cls, f"no installed package registers {target} in the {BACKENDS!r} "
                                         "entry-point group. Add it to pyproject.toml under "
                                         f"[project.entry-points.\"{BACKENDS}\"] and install the package "
                                         "(pip install -e .).")
    if info.version in ("", "?"):
        raise _fail("registration", cls, f"the package {info.distribution} that registers it has no version; "
                                         "set `version` in its pyproject.toml.")
    try:
        loaded = get_backend(info.name)
    except FaceAuditError as exc:
        raise _fail("registration", cls, f"the entry point {info.name!r} does not load: {exc}") from exc
    if loaded is not cls:
        raise _fail("registration", cls, f"the entry point {info.name!r} loads {loaded!r}, not {cls!r}.")
    if cls.name != info.name:
        raise _fail("registration", cls, f"the class attribute name = {cls.name!r} differs from the entry-point "
                                         f"name {info.name!r}; reports record the former, users type the latter. "
                                         "Make them equal.")
    sufs = cls.suffixes
    if not isinstance(sufs, tuple) or not sufs or not all(isinstance(s, str) and s.startswith(".") for s in sufs):
        raise _fail("registration", cls, f"suffixes must be a non-empty tuple of strings starting with '.', "
                                         f"got {sufs!r}.")
    if not any(path.name.lower().endswith(s.lower()) for s in sufs):
        raise _fail("registration", cls, f"the model file {path.name} ends with none of its suffixes {sufs}.")
    try:
        chosen = backend_for_path(path)
    except FaceAuditError as exc:
        raise _fail("registration", cls, f"faceaudit cannot pick a backend for {path.name}: {exc}") from exc
    if chosen != info.name:
        raise _fail("registration", cls, f"{path.name} goes to the backend {chosen!r}, whose suffix matches "
                                         f"longer; declare a more specific suffix.")


def _check_input_spec(cls: type[Backend], model: Backend) -> None:
    spec = model.input_spec
    if not isinstance(spec, InputSpec):
        raise _fail("input_spec", cls, f"input_spec is {type(spec).__name__}, not faceaudit.backends.InputSpec.")
    try:
        rebuilt = InputSpec(**spec.to_dict())
        canonical = InputSpec().with_overrides(source=f"{cls.__name__}.input_spec", **rebuilt.to_dict())
    except FaceAuditError as exc:
        raise _fail("input_spec", cls, f"the input spec {spec.to_dict()} is invalid: {exc}") from exc
    if canonical.to_dict() != spec.to_dict():
        raise _fail("input_spec", cls, f"the input spec {spec.to_dict()} is not in canonical form "
                                       f"({canonical.to_dict()}); build it with InputSpec().with_overrides(...).")


def _check_layers(cls: type[Backend], model: Backend) -> list[str]:
    layers = model.layers()
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail("layers", cls, f"layer names repeat: {dup[:5]}; each layer needs a unique name.")
    for i, l in enumerate(layers):
        if not isinstance(l.name, str) or not l.name or not isinstance(l.kind, str):
            raise _fail("layers", cls, f"layer {i} has name {l.name!r} and kind {l.kind!r}; both must be strings.")
        if l.index != i:
            raise _fail("layers", cls, f"layer {l.name!r} is at position {i} of layers() but has index {l.index}; "
                                       "LayerInfo.index is the layer's position in execution order.")
        if l.shape is not None and (len(l.shape) < 1 or l.shape[0] is not None):
            raise _fail("layers", cls, f"layer {l.name!r} has shape {l.shape}; shapes start with None for the batch.")
    return names


def _check_final(cls: type[Backend], model: Backend, names: list[str]) -> None:
    final = model.final_layer  # check_opened already refused an unset or unknown one
    shape = model.layer(final).shape
    if shape is not None and len(shape) != 2:
        raise _fail("final_layer", cls, f"the final layer {final!r} has shape {shape}; it must be the (batch, dim) "
                                        "face embedding.")


def _check_table(
    cls: type[Backend], model: Backend, names: list[str], run: Callable[[int, str], dict[str, np.ndarray]]
) -> None:
    poolings = ["avg"] if issubclass(cls, PrecomputedFeatures) else ["avg", "flatten"]
    for pooling in poolings:
        table = {r["name"]: r["dim"] for r in layer_table(model, pooling)}
        if list(table) != names:
            raise _fail("layer_table", cls, "layer_table() lists other layers than layers().")
        want = [n for n in names if pooling == "avg" or (table[n] is not None and table[n] <= FLATTEN_MAX_DIM)]
        got = run(1, pooling) if pooling == "avg" else _extract(cls, model, _faces(model.input_spec, 1), want, pooling)
        for n in want:
            dim = got[n].shape[1]
            if table[n] is not None and table[n] != dim:
                shape = model.layer(n).shape
                raise _fail("layer_table", cls, f"layer {n!r} is listed with shape {shape} and dim {table[n]} under "
                                                f"{pooling} pooling, but extraction returns {dim} values per image. "
                                                "Declare the shape the layer really has.")


def _check_determinism(
    cls: type[Backend], names: list[str], results: dict[int, dict[str, np.ndarray]],
    run: Callable[[int, str], dict[str, np.ndarray]],
) -> None:
    big = max(BATCH_SIZES)
    again = run(big, "avg")
    for n in names:
        a, b, one = results[big][n], again[n], results[1][n]
        if not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise _fail("determinism", cls, f"layer {n!r} gives different values for the same {big} images on a "
                                            f"second call (largest difference {np.abs(a - b).max():.3g}).")
        scale = max(1.0, float(np.abs(a[:1]).max()))
        if not np.allclose(one, a[:1], rtol=_RTOL, atol=_ATOL * scale):
            raise _fail("determinism", cls, f"layer {n!r} gives different values for an image alone and the same "
                                            f"image first in a batch of {big} (largest difference "
                                            f"{np.abs(one - a[:1]).max():.3g}); one image's features must not depend "
                                            "on the rest of its batch.")


def _check_wrong_file(cls: type[Backend], path: Path, opts: dict[str, Any]) -> None:
    lower = path.name.lower()
    suffix = max((s for s in cls.suffixes if lower.endswith(s.lower())), key=len, default=cls.suffixes[0])
    with tempfile.TemporaryDirectory(prefix="faceaudit-check-") as tmp:
        for label, content in (("text", b"this is not a model file\n" * 64), ("empty", b"")):
            bad = Path(tmp) / f"not-a-model-{label}{suffix}"
            bad.write_bytes(content)
            try:
                cls(bad, **opts)
            except FaceAuditError:
                continue
            except Exception as exc:
                raise _fail("wrong_file", cls, f"opening a {label} file that is not a model ({bad.name}) raised "
                                               f"{type(exc).__name__}: {exc}; raise faceaudit.errors.ModelError "
                                               "naming the file and the fix.") from exc
            raise _fail("wrong_file", cls, f"a {label} file that is not a model ({bad.name}) was opened without "
                                           "error; refuse it with faceaudit.errors.ModelError.")


# --------------------------------------------------------------------------- helpers


def _faces(spec: InputSpec, n: int, seed: int = 0) -> np.ndarray:
    """`n` random RGB images preprocessed exactly as faceaudit feeds them to this model."""
    from faceaudit.data.preprocess import PreprocessSpec

    rng = np.random.default_rng(seed)
    pre = PreprocessSpec.from_input_spec(spec)
    return np.stack([pre(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8), None)
                     for _ in range(n)])


def _extract(
    cls: type[Backend], model: Backend, batch: np.ndarray, names: list[str], pooling: str
) -> dict[str, np.ndarray]:
    try:
        out = model.extract(batch, names, pooling=pooling)
        check_features(model, out, names, len(batch))
    except BackendError as exc:
        raise _fail("rows_and_dtype", cls, str(exc)) from exc
    except FaceAuditError as exc:
        raise _fail("rows_and_dtype", cls, f"extract() refused faceaudit's own preprocessed batch of shape "
                                           f"{list(batch.shape)} with {pooling} pooling: {exc}") from exc
    return out


def _lookup(cls: type[Backend], model: Backend, paths: Sequence[str], names: list[str]) -> dict[str, np.ndarray]:
    try:
        feats, ok = cast(PrecomputedFeatures, model).lookup(list(paths), names)
        ok = np.asarray(ok)
        if ok.shape != (len(paths),) or ok.dtype != bool or not ok.all():
            raise _fail("rows_and_dtype", cls, f"lookup() of {len(paths)} paths the file holds returned the "
                                               f"found-mask {ok.tolist()}; expected {len(paths)} True values.")
        check_features(model, feats, names, len(paths))
    except BackendError as exc:
        raise _fail("rows_and_dtype", cls, str(exc)) from exc
    except FaceAuditError as exc:
        raise _fail("rows_and_dtype", cls, f"lookup() refused paths the file holds: {exc}") from exc
    return feats


__all__ = ["BATCH_SIZES", "CHECKS", "BackendCheckError", "check_backend"]
