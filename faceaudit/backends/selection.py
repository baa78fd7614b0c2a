"""Choosing which layers to probe: `auto`, explicit names, glob patterns.

`auto` follows the paper's spread of depth: the input, an early, a middle and a
late feature map, and the final embedding (about five layers). Feature maps are
preferred at activation outputs (ReLU, Clip, PReLU, Add, ... or, for PyTorch,
container blocks), because pre-activation convolution outputs are less usual
probe points.

Several models (a trend's checkpoints, a comparison's models) are matched layer
by layer: by name when they share an architecture, else by relative depth.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from faceaudit.backends.base import Backend, LayerInfo, PrecomputedFeatures
from faceaudit.backends.pooling import pooled_dim
from faceaudit.errors import ModelError, did_you_mean

__all__ = ["AUTO_FRACTIONS", "MatchedLayer", "layer_table", "match_layers", "select_layers"]

AUTO_FRACTIONS = (0.2, 0.5, 0.8)
_PREFERRED = {
    "relu", "clip", "prelu", "leakyrelu", "relu6", "hardswish", "hardtanh", "silu", "sigmoid", "add", "concat",
    "maxpool", "averagepool", "maxpool2d", "avgpool2d", "sequential", "basicblock", "bottleneck",
    "invertedresidual", "elu", "gelu", "mish", "swish",
}


def _auto(model: Backend) -> list[str]:
    layers = model.layers()
    final = model.final_layer
    inner = [l for l in layers[1:] if l.name != final]
    maps = [l for l in inner if l.shape is not None and len(l.shape) == 4]
    preferred = [l for l in maps if l.kind.lower() in _PREFERRED]
    pool: list[LayerInfo] = preferred or maps or inner
    picks = [layers[0].name]
    if pool:
        for f in AUTO_FRACTIONS:
            picks.append(pool[round(f * (len(pool) - 1))].name)
    picks.append(final)
    return list(dict.fromkeys(picks))


def select_layers(model: Backend, spec: str | Sequence[str] = "auto") -> list[str]:
    """Resolve a layer spec to layer names in model order.

    `spec` is "auto", "all", "final", "input", a comma-separated list of names
    and glob patterns (e.g. "*Relu*,embeddings"), or a sequence of those. Unknown
    names raise a ModelError that suggests close matches.
    """
    names = [l.name for l in model.layers()]
    if isinstance(spec, str):
        s = spec.strip()
        if s == "auto":
            return _auto(model)
        if s == "all":
            return names
        items = [p.strip() for p in s.split(",") if p.strip()] if s not in names else [s]
    else:
        items = [str(p) for p in spec]
    if not items:
        raise ModelError(f"No layers given for {model.path.name}; use 'auto', names or glob patterns.")
    chosen: set[str] = set()
    for item in items:
        if item in names:
            chosen.add(item)
        elif item == "final":
            chosen.add(model.final_layer)
        elif item == "input":
            chosen.add(names[0])
        elif item == "auto":
            chosen.update(_auto(model))
        elif any(c in item for c in "*?["):
            hits = fnmatch.filter(names, item)
            if not hits:
                raise ModelError(
                    f"The pattern {item!r} matches no layer of {model.path.name}. "
                    f"Run `faceaudit layers {model.path}` to list them."
                )
            chosen.update(hits)
        else:
            raise ModelError(
                f"{model.path.name} has no layer {item!r}.{did_you_mean(item, names)} "
                f"Run `faceaudit layers {model.path}` to list them, or use glob patterns like '*{item}*'."
            )
    return [n for n in names if n in chosen]


def layer_table(model: Backend, pooling: str = "avg") -> list[dict[str, Any]]:
    """Rows for `faceaudit layers MODEL`: name, kind, shape, pooled dim, relative depth, auto pick.

    `dim` is the number of features `model.extract(..., pooling=pooling)` returns
    per image (None when the shape is symbolic); for the input layer that is
    faceaudit's preprocessed face, pooled as the input (see `pool`).
    """
    auto = set(_auto(model))
    layers = model.layers()
    last = max(len(layers) - 1, 1)
    has_input = not isinstance(model, PrecomputedFeatures)
    return [
        {
            "name": l.name,
            "kind": l.kind,
            "shape": list(l.shape) if l.shape is not None else None,
            "dim": pooled_dim(l.shape, pooling, is_input=(i == 0 and has_input),
                              channels_last=(i == 0 and has_input and model.input_spec.layout == "NHWC")),
            "depth": round(i / last, 4),
            "auto": l.name in auto,
            "final": l.name == model.final_layer,
        }
        for i, l in enumerate(layers)
    ]


@dataclass(frozen=True)
class MatchedLayer:
    """One layer row compared across models: its key in the report and the layer it is in each model."""

    key: str
    depth: float
    names: dict[str, str]
    depths: dict[str, float]
    final: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "depth": self.depth, "names": dict(self.names), "depths": dict(self.depths),
                "final": self.final}


def _same_architecture(models: Sequence[Any]) -> bool:
    first = [(l.name, tuple(l.shape) if l.shape is not None else None) for l in models[0].layers()]
    return all([(l.name, tuple(l.shape) if l.shape is not None else None) for l in m.layers()] == first
               for m in models[1:])


def match_layers(models: Sequence[Any], labels: Sequence[str], spec: str | Sequence[str],
                 *, extra: Sequence[str] = ()) -> tuple[list[MatchedLayer], str]:
    """Resolve `spec` (+ `extra` specs) on the first model and find the same layers in the others.

    Why: a trend or a comparison puts the same layer of several models side by
    side. Models that share an architecture (identical layer names and shapes)
    are matched by name; otherwise by relative depth (0 = input, 1 = final, from
    `layer_table`): the input to the input, the final embedding to the final
    embedding, and every other layer to the layer of the same kind (else any
    kind) at the nearest depth. Returns the rows in depth order and the method
    ("name" or "depth").
    """
    ref = models[0]
    names = list(select_layers(ref, spec))
    for s in extra:
        names += [n for n in select_layers(ref, s) if n not in names]
    ref_table = {r["name"]: r for r in layer_table(ref)}
    order = [l.name for l in ref.layers()]
    names = sorted(set(names), key=order.index)
    if _same_architecture(models):
        rows = [
            MatchedLayer(n, float(ref_table[n]["depth"]), {lab: n for lab in labels},
                         {lab: float(ref_table[n]["depth"]) for lab in labels}, final=(n == ref.final_layer))
            for n in names
        ]
        return rows, "name"
    tables = [layer_table(m) for m in models]
    rows = []
    for n in names:
        r = ref_table[n]
        is_final = n == ref.final_layer
        is_input = order.index(n) == 0
        picked: dict[str, str] = {}
        depths: dict[str, float] = {}
        for lab, m, table in zip(labels, models, tables):
            if is_final:
                hit = next(t for t in table if t["name"] == m.final_layer)
            elif is_input:
                hit = table[0]
            else:
                pool = [t for t in table[1:] if t["kind"] == r["kind"] and t["name"] != m.final_layer]
                pool = pool or [t for t in table[1:] if t["name"] != m.final_layer] or table
                hit = min(pool, key=lambda t: (abs(float(t["depth"]) - float(r["depth"])), t["depth"]))
            picked[lab] = hit["name"]
            depths[lab] = float(hit["depth"])
        key = "final" if is_final else ("input" if is_input else f"depth {float(r['depth']):.2f}")
        if any(row.key == key for row in rows):
            key = f"depth {float(r['depth']):.4f} ({n})"
        rows.append(MatchedLayer(key, float(r["depth"]), picked, depths, final=is_final))
    return rows, "depth"
