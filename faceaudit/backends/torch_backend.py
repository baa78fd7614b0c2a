"""PyTorch backend: TorchScript (.pt/.ts), torch.export programs (.pt2), and nn.Modules from a factory.

Layers are module qualified names (``layer1.0.conv1``), captured with forward
hooks in eval + inference mode; ``output`` is the model's return value. Files
are never unpickled unless ``trust_pickle=True`` is passed: a pickle can run
arbitrary code; a ``.pt2`` archive is checked member by member before torch
opens it (faceaudit.backends._pt2). State dicts load with ``torch.load(weights_only=True)``.

TorchScript modules compile their forward, so Python hooks cannot see inside
them: for a TorchScript file only ``input`` and ``output`` are probe-able. Use a
``.pt2`` program (torch.export) or ``factory=`` to probe intermediate layers.
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.backends.base import INPUT_KIND, Backend, InputSpec, LayerInfo, parse_spec_json
from faceaudit.errors import FaceAuditError, InputError, ModelError, on_command_line

log = logging.getLogger(__name__)

METADATA_KEY = "faceaudit.input_spec"
OUTPUT_LAYER = "output"
INPUT_LAYER = "input"
_OPTIONS = {
    "device", "factory", "factory_kwargs", "trust_pickle", "final_layer",
    "height", "width", "layout", "channel_order", "mean", "std",
}


def _resolve_factory(factory: str | Callable[..., Any], path: Path) -> Callable[..., Any]:
    if callable(factory):
        return factory
    mod_name, _, fn_name = str(factory).partition(":")
    if not mod_name or not fn_name:
        raise ModelError(f"factory={factory!r} for {path.name} must look like 'package.module:function'.")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in fn_name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"Cannot find the model factory {factory!r} for {path.name} ({exc}). Install the package that "
            "defines it and check the 'package.module:function' spelling."
        ) from exc
    if not callable(obj):
        raise ModelError(f"The model factory {factory!r} is not callable.")
    return obj


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        for v in value.values():
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _pool_torch(t: Any, spec: str) -> Any:
    """Torch twin of faceaudit.backends.pooling.pool, run on the model's device (no full maps copied)."""
    import torch.nn.functional as F

    from faceaudit.backends.pooling import FLATTEN_MAX_DIM, parse_pooling

    kind, k = parse_pooling(spec)
    t = t.detach()
    if t.ndim == 1:
        return t.reshape(-1, 1).float()
    if t.ndim == 2:
        return t.float()
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    elif t.ndim > 4:
        t = t.flatten(2).unsqueeze(-1)
    if kind == "avg":
        return t.float().mean(dim=(2, 3))
    if kind == "max":
        return t.amax(dim=(2, 3)).float()
    if kind == "grid":
        return F.adaptive_avg_pool2d(t.float(), k).flatten(1)
    d = t[0].numel()
    if d > FLATTEN_MAX_DIM:
        raise InputError(
            f"flatten pooling would give {d} values per image (shape {list(t.shape[1:])}), above the cap of "
            f"{FLATTEN_MAX_DIM}. Use gridK pooling (e.g. grid4) or a later layer."
        )
    return t.flatten(1).float()


def _refused_global(exc: BaseException) -> str | None:
    """What a weights-only load refused to unpickle ("posix.system"), or None when it failed otherwise."""
    import pickle

    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "weights only" not in text.lower():
        return None
    m = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global ([\w.]+)", text)
    return m.group(1) if m else "object that is not a tensor"


def _first_line(exc: BaseException) -> str:
    """An exception's first line, without torch's advice that follows it."""
    return str(exc).strip().split("\n", 1)[0].split(". ", 1)[0]


class TorchBackend(Backend):
    """A PyTorch model. Options: device ("auto"/"cpu"/"cuda"), factory ("package.module:function" or a
    callable), factory_kwargs, trust_pickle (default False), final_layer, and input-spec overrides."""

    name = "torch"
    suffixes = (".pt", ".pth", ".ts", ".pt2")

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        unknown = set(options) - _OPTIONS
        if unknown:
            raise InputError(f"Unknown option(s) {sorted(unknown)} for the torch backend; known: {sorted(_OPTIONS)}.")
        import torch

        dev = str(options.get("device", "auto")).lower()
        if dev not in ("auto", "cpu", "cuda"):
            raise InputError(f"Unknown device {dev!r} for the torch backend; use auto, cpu or cuda.")
        if dev == "cuda" and not torch.cuda.is_available():
            raise ModelError("device='cuda' was asked for, but torch sees no CUDA GPU. Use device='cpu'.")
        self._device = torch.device("cuda" if dev != "cpu" and torch.cuda.is_available() else "cpu")
        self._fixed_batch: int | None = None
        self._hookable = True
        spec = InputSpec()
        meta_text = ""
        suffix = self.path.suffix.lower()
        factory = options.get("factory")
        try:
            if factory is not None:
                module = self._from_factory(factory, options.get("factory_kwargs") or {})
                self._kind = "factory"
            elif suffix == ".pt2":
                module, spec = self._from_export(spec, bool(options.get("trust_pickle")))
                self._kind = "export"
            else:
                module, meta_text = self._from_torchscript_or_pickle(bool(options.get("trust_pickle")))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"Cannot open {self.path} as a PyTorch model ({type(exc).__name__}: {exc}). The file may be "
                "truncated or of another format; export it again."
            ) from exc
        if meta_text:
            keys = parse_spec_json(meta_text, f"{self.path} extra file {METADATA_KEY}")
            spec = spec.with_overrides(source=f"{self.path} extra file {METADATA_KEY}", **keys)
            self._input_spec_sources.update(dict.fromkeys(keys, "metadata"))
        spec = spec.with_overrides(
            source=f"options for {self.path.name}",
            **{k: options.get(k) for k in ("height", "width", "layout", "channel_order", "mean", "std")},
        )
        self._input_spec = spec
        if self._kind != "export":
            module = module.to(self._device)
        self._module = module.eval() if hasattr(module, "eval") else module
        self._modules = dict(self._module.named_modules()) if self._hookable else {}
        self._discover()
        self._check_final(options.get("final_layer"))

    # ----------------------------------------------------------------- loading
    def _from_factory(self, factory: Any, kwargs: Mapping[str, Any]) -> Any:
        import torch

        fn = _resolve_factory(factory, self.path)
        module = fn(**dict(kwargs))
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"The factory {factory!r} returned {type(module).__name__}, not a torch.nn.Module.")
        try:
            state = torch.load(str(self.path), map_location="cpu", weights_only=True)
        except Exception as exc:
            refused = _refused_global(exc)
            if refused is not None:
                raise ModelError(
                    f"{self.path} was refused for safety: besides tensors it holds a pickled {refused}, and "
                    "unpickling it could run any code stored in the file. Save only the weights, where you "
                    "trust the file: torch.save(model.state_dict(), path)."
                ) from None
            raise ModelError(
                f"{self.path} is not a loadable state dict ({type(exc).__name__}: {exc}). Save the weights "
                "with torch.save(model.state_dict(), path); full pickles are refused."
            ) from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelError(f"{self.path} holds {type(state).__name__}, not a state dict of tensors.")
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"The weights in {self.path} do not fit the module built by {factory!r}: {exc}. "
                "Check that the factory and its factory_kwargs match the saved model."
            ) from exc
        return module

    def _from_export(self, spec: InputSpec, trust_pickle: bool) -> tuple[Any, InputSpec]:
        import torch

        from faceaudit.backends._pt2 import load_export_program

        if trust_pickle:
            warnings.warn(
                f"Opening {self.path} unchecked with trust_pickle=True: this runs any code stored in the file.",
                stacklevel=3,
            )
        ep = load_export_program(self.path, trust_pickle=trust_pickle)
        user_inputs = [
            s for s in ep.graph_signature.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
        ]
        placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        if len(user_inputs) != 1:
            raise ModelError(f"{self.path} takes {len(user_inputs)} inputs; faceaudit feeds one image batch.")
        val = placeholders[user_inputs[0].arg.name].meta.get("val")
        shape = tuple(val.shape) if val is not None else ()
        if len(shape) != 4:
            raise ModelError(
                f"{self.path}: the program's input has rank {len(shape)}, but faceaudit feeds image batches of "
                "rank 4 (N, C, H, W). Export the model with an image input."
            )
        ints = [d if isinstance(d, int) else None for d in shape]
        self._fixed_batch = ints[0]
        if ints[1] == 3:
            spec = spec.with_overrides(layout="NCHW", height=ints[2], width=ints[3])
        elif ints[3] == 3:
            spec = spec.with_overrides(layout="NHWC", height=ints[1], width=ints[2])
        module = torch.export.unflatten(ep)
        if self._device.type != "cpu":
            module = module.to(self._device)
        return module, spec

    def _from_torchscript_or_pickle(self, trust_pickle: bool) -> tuple[Any, str]:
        import torch

        extra = {METADATA_KEY: ""}
        try:
            module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
            self._kind = "torchscript"
            self._hookable = False
            return module, extra[METADATA_KEY].decode() if isinstance(extra[METADATA_KEY], bytes) else extra[METADATA_KEY]
        except Exception as jit_exc:
            jit_error = jit_exc
        if trust_pickle:
            warnings.warn(
                f"Unpickling {self.path} with trust_pickle=True: this runs any code stored in the file.",
                stacklevel=3,
            )
            log.warning("Unpickling %s (trust_pickle=True): this runs any code stored in the file.", self.path)
            obj = torch.load(str(self.path), map_location="cpu", weights_only=False)
            if not isinstance(obj, torch.nn.Module):
                raise ModelError(f"{self.path} unpickles to {type(obj).__name__}, not a torch.nn.Module.")
            self._kind = "pickle"
            return obj, ""
        cli = on_command_line()
        convert = "save the model with torch.jit.save or torch.export.save (a .pt2 file)" + (
            "" if cli else ", or save its state_dict and pass factory='package.module:function'"
        )
        opt_in = "--trust-pickle" if cli else "trust_pickle=True"
        try:
            obj = torch.load(str(self.path), map_location="cpu", weights_only=True)
        except Exception as exc:
            refused = _refused_global(exc)
            if refused is not None:
                raise ModelError(
                    f"{self.path} was refused for safety: it is a full pickle that would load {refused}, and "
                    f"unpickling can run any code stored in the file. Where you trust it, {convert}; or, only for "
                    f"a file you created yourself, pass {opt_in}."
                ) from None
            obj = None
        if isinstance(obj, dict):
            raise ModelError(
                f"{self.path} holds a state dict, not a model. "
                + (
                    "The command line opens whole models only: save it with torch.jit.save or torch.export.save."
                    if cli
                    else "Pass factory='package.module:function' (a function that builds the nn.Module) so the "
                    "weights can be loaded into it."
                )
            )
        raise ModelError(
            f"{self.path} is neither a TorchScript file nor a PyTorch checkpoint faceaudit can read "
            f"({type(jit_error).__name__}: {_first_line(jit_error)}). It may be truncated or of another format: "
            f"{convert}."
        )

    # --------------------------------------------------------------- discovery
    def _dummy(self, n: int) -> np.ndarray:
        s = self._input_spec
        shape = (n, 3, s.height, s.width) if s.layout == "NCHW" else (n, s.height, s.width, 3)
        return np.zeros(shape, dtype=np.float32)

    def _discover(self) -> None:
        s = self._input_spec
        in_shape = (None, 3, s.height, s.width) if s.layout == "NCHW" else (None, s.height, s.width, 3)
        layers = [LayerInfo(INPUT_LAYER, INPUT_KIND, in_shape, 0)]
        order: dict[str, tuple[str, tuple[int | None, ...]]] = {}
        names = [n for n in self._modules if n]
        try:
            out, captured = self._forward(self._dummy(self._fixed_batch or 2), names, record_order=order)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.path} fails on a zero batch of shape {list(self._dummy(1).shape)} "
                f"({type(exc).__name__}: {exc}). Set the input spec (height, width, layout) to what the model expects."
            ) from exc
        for name, (kind, shape) in order.items():
            layers.append(LayerInfo(name, kind, shape, len(layers)))
        final = _first_tensor(out)
        final_shape = (None, *final.shape[1:]) if final is not None else None
        layers.append(LayerInfo(OUTPUT_LAYER, type(self._module).__name__ if self._kind != "torchscript"
                                else getattr(self._module, "original_name", "ScriptModule"), final_shape, len(layers)))
        self._layers = layers
        self._final = OUTPUT_LAYER

    # --------------------------------------------------------------- running
    def _forward(
        self, batch: np.ndarray, names: list[str], record_order: dict[str, Any] | None = None,
        pooling: str | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        import torch

        captured: dict[str, Any] = {}
        handles = []

        def make_hook(qual: str) -> Callable[..., None]:
            def hook(mod: Any, args: Any, output: Any) -> None:
                t = _first_tensor(output)
                if t is None:
                    return
                if record_order is not None and qual not in record_order:
                    kind = getattr(mod, "original_name", None) or type(mod).__name__
                    record_order[qual] = (kind, (None, *t.shape[1:]))
                # a module called twice keeps its last output; pooling here frees the full map at once
                captured[qual] = _pool_torch(t, pooling) if pooling is not None else t.detach()

            return hook

        for n in names:
            if n in self._modules:
                handles.append(self._modules[n].register_forward_hook(make_hook(n)))
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device)
                out = self._module(x)
        finally:
            for h in handles:
                h.remove()
        return out, captured

    def _run(self, batch: np.ndarray, names: list[str]) -> Mapping[str, np.ndarray]:
        return self._run_pooled(batch, names, None)

    def _run_pooled(self, batch: np.ndarray, names: list[str], pooling: str | None) -> dict[str, np.ndarray]:  # type: ignore[override]
        fb = self._fixed_batch
        if fb is not None and len(batch) != fb:
            parts: list[dict[str, np.ndarray]] = []
            for start in range(0, len(batch), fb):
                chunk = batch[start : start + fb]
                n = len(chunk)
                if n < fb:
                    chunk = np.concatenate([chunk, np.zeros((fb - n, *chunk.shape[1:]), chunk.dtype)])
                got = self._run_once(chunk, names, pooling)
                parts.append({k: v[:n] for k, v in got.items()})
            return {k: np.concatenate([p[k] for p in parts]) for k in names}
        return self._run_once(batch, names, pooling)

    def _run_once(self, batch: np.ndarray, names: list[str], pooling: str | None) -> dict[str, np.ndarray]:
        hooked = [n for n in names if n != OUTPUT_LAYER]
        try:
            out, captured = self._forward(batch, hooked, pooling=pooling)
        except FaceAuditError:
            raise
        except Exception as exc:
            raise ModelError(
                f"{self.path} failed on a batch of shape {list(batch.shape)} ({type(exc).__name__}: {exc}). "
                "Check the input spec with `faceaudit layers`."
            ) from exc
        res: dict[str, np.ndarray] = {}
        for n in names:
            t = _first_tensor(out) if n == OUTPUT_LAYER else captured.get(n)
            if t is None:
                raise ModelError(f"Layer {n!r} of {self.path.name} produced no tensor in this forward pass.")
            if t.ndim == 0 or t.shape[0] != len(batch):
                raise ModelError(
                    f"{self.path}: layer {n!r} returned shape {list(t.shape)} for a batch of {len(batch)} images; "
                    "its first axis is not the batch. Probe another layer."
                )
            if n == OUTPUT_LAYER and pooling is not None:
                t = _pool_torch(t, pooling)
            res[n] = t.float().cpu().numpy()
        return res

    @property
    def device(self) -> str:
        return str(self._device)

__all__ = [
    "INPUT_LAYER",
    "METADATA_KEY",
    "OUTPUT_LAYER",
    "TorchBackend",
]
