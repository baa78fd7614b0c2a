"""ONNX backend (onnxruntime).

Intermediate tensors are exposed by adding them as extra graph outputs, so all
requested layers come from one session run per batch. Layer names are the
models' own tensor names; shapes come from ONNX shape inference. A model
exported with a fixed batch of 1 is rewritten to a symbolic batch; if the graph
still refuses larger batches (e.g. a hard-coded Reshape), images are run one by
one. CUDA is used automatically when onnxruntime-gpu and a GPU are present.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends.base import INPUT_KIND, Backend, InputSpec, LayerInfo, parse_spec_json
from faceaudit.errors import InputError, ModelError

log = logging.getLogger(__name__)

METADATA_KEY = "faceaudit.input_spec"
_SKIP_OPS = {"Constant", "Shape", "ConstantOfShape", "Size", "Range"}
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_PROTO_LIMIT = 2_000_000_000
_OPTIONS = {
    "device", "final_layer", "input_name", "intra_op_threads",
    "height", "width", "layout", "channel_order", "mean", "std",
    "trust_pickle",  # accepted for a uniform CLI; ONNX files are never unpickled
}


def _dims(type_proto: Any) -> tuple[int | None, ...] | None:
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)


def choose_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for `device` ("auto", "cpu", "cuda")."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    dev = str(device).lower()
    if dev not in ("auto", "cpu", "cuda"):
        raise InputError(f"Unknown device {device!r} for the ONNX backend; use auto, cpu or cuda.")
    if dev in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if dev == "cuda":
        raise ModelError(
            "device='cuda' was asked for, but onnxruntime has no CUDAExecutionProvider. Install the GPU "
            "build: pip uninstall onnxruntime && pip install 'faceaudit[gpu]'."
        )
    return ["CPUExecutionProvider"]


class OnnxBackend(Backend):
    """An ONNX model run with onnxruntime. Options: device, final_layer, input_name,
    intra_op_threads, and input-spec overrides height, width, layout, channel_order, mean, std."""

    name = "onnx"
    suffixes = (".onnx",)

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InputError(f"Unknown option(s) {sorted(unknown)} for the ONNX backend; known: {sorted(_OPTIONS)}.")
        import onnx

        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # DecodeError, OSError, ...
            raise ModelError(
                f"{self.path} is not a readable ONNX model ({type(exc).__name__}: {exc}). The file may be "
                "truncated or not an ONNX file: download or export it again (torch.onnx.export)."
            ) from exc
        if proto.ir_version <= 0 or not proto.graph.node or not proto.graph.output:
            raise ModelError(
                f"{self.path} does not hold an ONNX graph (no nodes or outputs). The file may be truncated or "
                "not an ONNX model: download or export it again."
            )
        self._proto = proto
        self._external = any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
        )
        self._external_loaded = False
        self._sessions: dict[tuple[str, ...], Any] = {}
        self._tmpdirs: list[tempfile.TemporaryDirectory[str]] = []
        self._providers = choose_providers(options.get("device", "auto"))
        self._one_by_one = False

        init_names = {t.name for t in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in init_names]
        wanted = options.get("input_name")
        if wanted:
            inputs = [i for i in inputs if i.name == wanted]
            if not inputs:
                raise ModelError(f"{self.path} has no graph input {wanted!r}; check input_name.")
        if len(inputs) != 1:
            raise ModelError(
                f"{self.path} has {len(inputs)} graph inputs ({', '.join(i.name for i in inputs)}); "
                "faceaudit feeds one image batch. Pass input_name=NAME to pick it."
            )
        inp = inputs[0]
        self._input_name = inp.name
        in_dims = _dims(inp.type) or ()
        if len(in_dims) != 4:
            raise ModelError(
                f"{self.path}: the input {inp.name!r} has rank {len(in_dims)} (shape {list(in_dims)}), but "
                "faceaudit feeds image batches of rank 4, (N, C, H, W) or (N, H, W, C). Export the model "
                "with an image input (add the preprocessing layers to the model if needed)."
            )
        self._fixed_batch = in_dims[0]
        spec = InputSpec()
        if in_dims[3] == 3 and in_dims[1] != 3:
            spec = spec.with_overrides(layout="NHWC", height=in_dims[1], width=in_dims[2])
        elif in_dims[1] in (3, None):
            spec = spec.with_overrides(layout="NCHW", height=in_dims[2], width=in_dims[3])
        else:
            raise ModelError(
                f"{self.path}: the input {inp.name!r} has shape {list(in_dims)}, with no axis of 3 colour "
                "channels in position 1 (NCHW) or 3 (NHWC). faceaudit feeds RGB/BGR images; export the model "
                "with a 3-channel image input."
            )
        meta = {p.key: p.value for p in proto.metadata_props}
        if METADATA_KEY in meta:
            keys = parse_spec_json(meta[METADATA_KEY], f"{self.path} metadata {METADATA_KEY}")
            spec = spec.with_overrides(source=f"{self.path} metadata {METADATA_KEY}", **keys)
            self._input_spec_sources.update(dict.fromkeys(keys, "metadata"))
        spec = spec.with_overrides(
            source=f"options for {self.path.name}",
            **{k: options.get(k) for k in ("height", "width", "layout", "channel_order", "mean", "std")},
        )
        self._input_spec = spec

        # Shapes from ONNX shape inference (best effort: unknown shapes stay None).
        types: dict[str, Any] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(proto)
            vis = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
        except Exception as exc:  # pragma: no cover - depends on exotic ops
            log.warning("ONNX shape inference failed for %s (%s); layer shapes unknown.", self.path, exc)
            vis = list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)
        for vi in vis:
            types.setdefault(vi.name, vi.type)
        self._elem: dict[str, int] = {}
        layers = [LayerInfo(inp.name, INPUT_KIND, tuple([None, *in_dims[1:]]), 0)]
        seen = {inp.name}
        for node in proto.graph.node:
            if node.op_type in _SKIP_OPS:
                continue
            for out in node.output:
                if not out or out in seen:
                    continue
                tp = types.get(out)
                elem = tp.tensor_type.elem_type if tp is not None else 0
                if elem and elem not in _FLOAT_TYPES:
                    continue
                dims = _dims(tp) if tp is not None else None
                if dims is not None and len(dims) == 0:
                    continue
                shape = (None, *dims[1:]) if dims else None
                self._elem[out] = elem or 1
                layers.append(LayerInfo(out, node.op_type, shape, len(layers)))
                seen.add(out)
        self._layers = layers
        self._final = proto.graph.output[0].name
        self._check_final(options.get("final_layer"))

    # ------------------------------------------------------------------ sessions
    def _session(self, names: tuple[str, ...]) -> Any:
        sess = self._sessions.get(names)
        if sess is not None:
            return sess
        import onnx
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = self.options.get("intra_op_threads")
        if threads:
            opts.intra_op_num_threads = int(threads)
        original = tuple(o.name for o in self._proto.graph.output)
        try:
            if names == original and self._fixed_batch is None:
                source: Any = str(self.path)  # unchanged graph: let onnxruntime read the file itself
            else:
                if self._external and not self._external_loaded:
                    onnx.load_external_data_for_model(self._proto, str(self.path.parent))
                    self._external_loaded = True
                m = onnx.ModelProto()
                m.CopyFrom(self._proto)
                del m.graph.output[:]
                for n in names:
                    m.graph.output.append(onnx.helper.make_tensor_value_info(n, self._elem.get(n, 1), None))
                if self._fixed_batch is not None:
                    # Make the batch symbolic; stale intermediate shapes are dropped.
                    dim0 = next(i for i in m.graph.input if i.name == self._input_name).type.tensor_type.shape.dim[0]
                    dim0.Clear()
                    dim0.dim_param = "batch"
                    del m.graph.value_info[:]
                if m.ByteSize() < _PROTO_LIMIT:
                    source = m.SerializeToString()
                else:
                    tmp = tempfile.TemporaryDirectory(prefix="faceaudit-onnx-")
                    self._tmpdirs.append(tmp)
                    source = os.path.join(tmp.name, "model.onnx")
                    onnx.save_model(m, source, save_as_external_data=True, location="model.data")
            sess = ort.InferenceSession(source, sess_options=opts, providers=self._providers)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"onnxruntime cannot load {self.path} ({type(exc).__name__}: {exc}). The file may be truncated, "
                "use an operator this onnxruntime lacks, or miss its external-data file(s) beside it: export it "
                "again or upgrade onnxruntime."
            ) from exc
        self._sessions[names] = sess
        return sess

    def _run(self, batch: np.ndarray, names: list[str]) -> Mapping[str, np.ndarray]:
        key = tuple(names)
        sess = self._session(key)
        if self._one_by_one and len(batch) > 1:
            return self._run_singly(sess, batch, key)
        try:
            outs = sess.run(list(key), {self._input_name: batch})
        except Exception as exc:
            if len(batch) > 1 and self._fixed_batch is not None:
                log.info("%s refuses batches of %d (%s); running images one by one.", self.path.name, len(batch), exc)
                self._one_by_one = True
                return self._run_singly(sess, batch, key)
            raise ModelError(
                f"onnxruntime failed on {self.path} for a batch of shape {list(batch.shape)} "
                f"({type(exc).__name__}: {exc}). Check the input spec (size, layout) with `faceaudit layers`."
            ) from exc
        bad = [(k, o.shape) for k, o in zip(key, outs) if o.ndim == 0 or o.shape[0] != len(batch)]
        if bad and len(batch) > 1 and self._fixed_batch is not None:
            # e.g. a Reshape to a constant [1, -1]: the graph mixes images; run them one by one
            log.info("%s mixes the batch axis at %s; running images one by one.", self.path.name, bad[0][0])
            self._one_by_one = True
            return self._run_singly(sess, batch, key)
        if bad:
            raise ModelError(
                f"{self.path}: layer {bad[0][0]!r} returned shape {list(bad[0][1])} for a batch of {len(batch)} "
                "images; its first axis is not the batch. Probe another layer, or re-export the model with a "
                "dynamic batch axis."
            )
        return dict(zip(key, outs))

    def _run_singly(self, sess: Any, batch: np.ndarray, key: tuple[str, ...]) -> dict[str, np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in key]
        for i in range(len(batch)):
            try:
                outs = sess.run(list(key), {self._input_name: batch[i : i + 1]})
            except Exception as exc:
                raise ModelError(
                    f"onnxruntime failed on {self.path} for one image of shape {list(batch.shape[1:])} "
                    f"({type(exc).__name__}: {exc}). Check the input spec with `faceaudit layers`."
                ) from exc
            for p, o in zip(parts, outs):
                p.append(o)
        return {k: np.concatenate(p) for k, p in zip(key, parts)}

    @property
    def providers(self) -> list[str]:
        """Execution providers in use (CUDA first when available)."""
        return list(self._providers)

__all__ = [
    "METADATA_KEY",
    "OnnxBackend",
    "choose_providers",
]
