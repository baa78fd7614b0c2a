"""The trend.json and compare.json schemas: frozen `TrendResult` and `CompareResult` <-> JSON.

The reports over several models follow the same rule as report.json (see
:mod:`faceaudit.report.schema`): one frozen class per report whose `to_dict()`
is the JSON written and whose `from_dict()` validates a JSON dictionary,
raising `ReportError` that names the bad key. The renderers read these
classes, so the HTML and Markdown show exactly what the JSON holds. The
shared parts (`data`) reuse the audit's classes; the entries produced by other
rooms (checkpoints, layers, expressivity, fairness, trend summaries,
differences) are kept as validated read-only mappings (their required keys are
checked, extra keys are kept).

trend.json (``schema_version`` "1.0", ``kind`` "trend")::

    {"schema_version", "kind": "trend", "faceaudit_version", "created" (ISO 8601), "demo": bool,
     "checkpoints": [{"label", "index", "path", "sha256", "backend", "final_layer", "input": {...}}],  # training order
     "data": {"manifest", "n_images", "n_used", "n_failed", "failed": [{"path", "reason"}] (first 20),
              "attributes": [{"name", "kind", "n_valid", "n_missing", "groups": [{"label", "count"}]}],
              "identity": {"n_identities", "median_images_per_identity", "n_single_dropped"} | null},
     "layer_matching": "name" | "depth",
     "focus_layer": layer key followed across checkpoints,
     "layers": [{"key", "depth", "names": {checkpoint: layer name}, "depths": {checkpoint: depth}, "final"}],
     "expressivity": [{"checkpoint", "layer" (key), "layer_name", "attribute", **ExpressivityResult.to_dict()}],
     "trend": [{"attribute", "layer", "mi": [...], "ci_low": [...], "ci_high": [...], "normalized": [...],
                "peak", "peak_index", "shape": "rise-then-fall" | "rising" | "falling" | "flat",
                "rise" | "fall" | "first_to_last": {"delta", "se", "threshold", "significant"}}],
     "warnings": [str], "timings": {...seconds}, "settings": {..., "z", "rule"}, "environment": {...}}

compare.json (``schema_version`` "1.0", ``kind`` "compare")::

    {"schema_version", "kind": "compare", "faceaudit_version", "created", "demo": false,
     "models": [{"label", "index", "reference": bool, "path", "sha256", "backend", "final_layer", "n_layers",
                 "input": {...}}],                       # the first model is the reference
     "data": {... as in trend.json ...},
     "layer_matching": "name" | "depth",
     "layers": [{"key", "depth", "names": {model: layer name}, "depths": {model: depth}, "final"}],
     "expressivity": [{"model", "layer" (key), "layer_name", "attribute", **ExpressivityResult.to_dict()}],
     "expressivity_differences": [{"layer", "attribute", "model_a", "model_b", "mi_a", "mi_b",
                                   "delta", "se", "threshold", "significant"}],          # delta = b - a, nats
     "fairness": [{"model", **VerificationFairnessResult.to_dict()}] | null, "fairness_skipped_reason": str | null,
     "fairness_differences": [{"attribute", "metric": "fmr" | "fnmr", "quantity": "disparity" | "group rate",
                               "group" (null for a disparity), "model_a", "model_b", "value_a", "value_b",
                               "delta", "se", "threshold", "significant", ...}],
     "warnings", "timings", "settings": {..., "z", "rule"}, "environment"}

All MI values are in nats. Keys a reader may lack in a hand-written file
(`demo`, `layer_matching`, `warnings`, `timings`, `environment`,
`fairness_skipped_reason`) read as false, "name", empty or null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faceaudit.report.schema import (
    _FIX,
    SCHEMA_VERSION,
    DataInfo,
    ReportError,
    _check_expressivity,
    _check_fairness,
    _check_version,
    _extra,
    _int,
    _list,
    _map,
    _num,
    _opt_num_list,
    _opt_num_map,
    _opt_nums,
    _opt_strs,
    _plain,
    _req,
    _str,
    _thaw,
    _with_extra,
    report_head,
    report_tail,
)

__all__ = ["CompareResult", "TrendResult", "as_compare", "as_trend"]

_SHAPES = ("rise-then-fall", "rising", "falling", "flat")
_METRICS = ("fmr", "fnmr")
_QUANTITIES = ("disparity", "group rate")


# --------------------------------------------------------------------------- entry checks


def _object(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ReportError(f"report '{where}' must be an object (dict), got {type(v).__name__}. {_FIX}")
    return v


def _bool(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> None:
    if optional and d.get(key) is None:
        return
    v = _req(d, key, where)
    if not isinstance(v, bool):
        raise ReportError(f"report key '{where}.{key}' must be true or false, got {v!r}. {_FIX}")


def _opt_map(d: Mapping[str, Any], key: str, where: str) -> None:
    if d.get(key) is not None:
        _map(d, key, where)


def _check_model(m: Any, where: str) -> Mapping[str, Any]:
    """One checkpoint or model: its label and path, and the optional keys the report shows."""
    m = _plain(_object(m, where), where)
    _str(m, "label", where)
    _str(m, "path", where)
    _opt_strs(m, ("sha256", "backend", "backend_package", "backend_version", "final_layer"), where)
    _opt_nums(m, ("index", "n_layers"), where)
    _bool(m, "reference", where, optional=True)
    _opt_map(m, "input", where)
    _opt_map(m, "input_check", where)
    return m


def _check_layer(layer: Any, where: str) -> Mapping[str, Any]:
    """One matched layer row: its key, relative depth and each model's own layer name."""
    layer = _plain(_object(layer, where), where)
    _str(layer, "key", where)
    _num(layer, "depth", where, nullable=False)
    names = _map(layer, "names", where)
    if not all(isinstance(v, str) for v in names.values()):
        raise ReportError(f"report key '{where}.names' must map each model to a layer name (a string). {_FIX}")
    _opt_num_map(layer, "depths", where)
    _bool(layer, "final", where, optional=True)
    return layer


def _check_entry(e: Any, where: str, who: str) -> Mapping[str, Any]:
    """One expressivity estimate of a trend or comparison: the audit's entry plus the model it belongs to."""
    e = _check_expressivity(e, where)
    _str(e, who, where)
    _opt_strs(e, ("layer_name",), where)
    return e


def _check_model_fairness(f: Any, where: str) -> Mapping[str, Any]:
    """One model's verification fairness for one attribute: the audit's entry plus the model it belongs to."""
    f = _check_fairness(f, where)
    _str(f, "model", where)
    return f


def _check_difference(d: Any, where: str) -> None:
    """The significance keys of one difference (see :func:`faceaudit.stats.difference`)."""
    for key in ("delta", "se", "threshold"):
        _num(d, key, where)
    _bool(d, "significant", where)


def _check_summary(t: Any, where: str, n_checkpoints: int) -> Mapping[str, Any]:
    """One attribute's trend: a value per checkpoint, the peak, and the rise, fall and overall change."""
    t = _plain(_object(t, where), where)
    _str(t, "attribute", where)
    _str(t, "layer", where)
    _str(t, "peak", where)
    for key in ("mi", "ci_low", "ci_high", "normalized"):
        _list(t, key, where)
        _opt_num_list(t, key, where, n_checkpoints)
    peak = _int(t, "peak_index", where)
    if not 0 <= int(peak or 0) < n_checkpoints:
        raise ReportError(f"report key '{where}.peak_index' must index a checkpoint (0 to {n_checkpoints - 1}), "
                          f"got {peak!r}. {_FIX}")
    shape = _str(t, "shape", where)
    if shape not in _SHAPES:
        raise ReportError(f"report key '{where}.shape' must be one of {', '.join(_SHAPES)}, got {shape!r}. {_FIX}")
    for key in ("rise", "fall", "first_to_last"):
        _check_difference(_map(t, key, where), f"{where}.{key}")
    return t


def _check_expressivity_difference(d: Any, where: str) -> Mapping[str, Any]:
    """One model-minus-reference expressivity difference (nats)."""
    d = _plain(_object(d, where), where)
    for key in ("layer", "attribute", "model_a", "model_b"):
        _str(d, key, where)
    _num(d, "mi_a", where)
    _num(d, "mi_b", where)
    _check_difference(d, where)
    return d


def _check_fairness_difference(d: Any, where: str) -> Mapping[str, Any]:
    """One model-minus-reference difference of an error rate or of a disparity between groups."""
    d = _plain(_object(d, where), where)
    for key in ("attribute", "model_a", "model_b"):
        _str(d, key, where)
    for key, allowed in (("metric", _METRICS), ("quantity", _QUANTITIES)):
        v = _str(d, key, where)
        if v not in allowed:
            raise ReportError(f"report key '{where}.{key}' must be one of {', '.join(allowed)}, got {v!r}. {_FIX}")
    group = _req(d, "group", where)
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int, float))):
        raise ReportError(f"report key '{where}.group' must be a group label or null, got {group!r}. {_FIX}")
    _num(d, "value_a", where)
    _num(d, "value_b", where)
    _opt_strs(d, ("worst_a", "best_a", "worst_b", "best_b"), where)
    _bool(d, "small", where, optional=True)
    _check_difference(d, where)
    return d


def _checked(items: Sequence[Any], name: str, check: Any, *args: Any) -> tuple[Mapping[str, Any], ...]:
    return tuple(check(x, f"{name}[{i}]", *args) for i, x in enumerate(items))


def _check_settings(settings: Mapping[str, Any]) -> None:
    attrs = _list(settings, "attrs", "settings")
    if not all(isinstance(a, str) for a in attrs):
        raise ReportError(f"report key 'settings.attrs' must be a list of attribute names, got {list(attrs)!r}. {_FIX}")
    _opt_nums(settings, ("z",), "settings")


def _header(d: Any, kind: str) -> Mapping[str, Any]:
    """The checks every trend.json and compare.json starts with: an object, its kind and schema version."""
    if not isinstance(d, Mapping):
        raise ReportError(f"a {kind} report must be a JSON object (dict), got {type(d).__name__}. {_FIX}")
    d = _plain(d, "")
    _check_version(_req(d, "schema_version", ""))
    if d.get("kind") != kind:
        raise ReportError(f"report key 'kind' is {d.get('kind')!r}, expected {kind!r}; use the matching command. {_FIX}")
    return d


def _common(d: Mapping[str, Any]) -> dict[str, Any]:
    """The keys trend.json and compare.json share, validated, as constructor arguments."""
    demo = d.get("demo", False)
    if not isinstance(demo, bool):
        raise ReportError(f"report key 'demo' must be true or false, got {demo!r}. {_FIX}")
    matching = _str(d, "layer_matching", "", optional=True) or "name"
    settings = _map(d, "settings", "")
    _check_settings(settings)
    return {
        "schema_version": str(d["schema_version"]),
        "faceaudit_version": str(_str(d, "faceaudit_version", "")),
        "created": str(_str(d, "created", "")),
        "demo": demo,
        "data": DataInfo.from_dict(_map(d, "data", "")),
        "layer_matching": matching,
        "layers": tuple(_list(d, "layers", "")),
        "expressivity": tuple(_list(d, "expressivity", "")),
        "warnings": tuple(_strings(d, "warnings")),
        "timings": _map(d, "timings", "") if d.get("timings") is not None else {},
        "settings": settings,
        "environment": _map(d, "environment", "") if d.get("environment") is not None else {},
    }


def _strings(d: Mapping[str, Any], key: str) -> list[str]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ReportError(f"report key '{key}' must be a list of strings. {_FIX}")
    return list(v)


def _validate(result: Any, kind: str, models_key: str, who: str) -> None:
    """Check and freeze what a trend and a comparison share: version, kind, models, layers, expressivity,
    warnings and the settings; `models_key` names the list of models, `who` an estimate's model key."""
    _check_version(result.schema_version)
    if result.kind != kind:
        raise ReportError(f"a {type(result).__name__} has kind {kind!r}, got {result.kind!r}. {_FIX}")
    set_ = object.__setattr__
    set_(result, models_key, _checked(getattr(result, models_key), models_key, _check_model))
    if not getattr(result, models_key):
        raise ReportError(f"report key '{models_key}' must list at least one {who}. {_FIX}")
    set_(result, "layers", _checked(result.layers, "layers", _check_layer))
    set_(result, "expressivity", _checked(result.expressivity, "expressivity", _check_entry, who))
    set_(result, "warnings", tuple(str(w) for w in result.warnings))
    for name in ("timings", "settings", "environment", "extra"):
        set_(result, name, _plain(dict(getattr(result, name)), name))
    _check_settings(result.settings)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrendResult:
    """One trend across training checkpoints, in the trend.json layout; `to_dict()` is the JSON twin.

    Why typed: the library, trend.json, trend.html and trend.md read one
    validated object, so a hand-edited or damaged file fails with the key
    named instead of deep inside a renderer.
    """

    faceaudit_version: str
    created: str
    checkpoints: tuple[Mapping[str, Any], ...]
    data: DataInfo
    focus_layer: str
    layers: tuple[Mapping[str, Any], ...]
    expressivity: tuple[Mapping[str, Any], ...]
    trend: tuple[Mapping[str, Any], ...]
    settings: Mapping[str, Any]
    layer_matching: str = "name"
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    demo: bool = False
    kind: str = "trend"
    schema_version: str = SCHEMA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("schema_version", "kind", "faceaudit_version", "created", "demo", "checkpoints", "data",
             "layer_matching", "focus_layer", "layers", "expressivity", "trend", "warnings", "timings", "settings",
             "environment")

    def __post_init__(self) -> None:
        _validate(self, "trend", "checkpoints", "checkpoint")
        object.__setattr__(self, "trend", _checked(self.trend, "trend", _check_summary, len(self.checkpoints)))

    @property
    def labels(self) -> list[str]:
        """The checkpoints' labels in training order."""
        return [str(c["label"]) for c in self.checkpoints]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict in the trend.json layout (keys in schema order; no NaN)."""
        base = {
            **report_head(self),
            "checkpoints": [_thaw(c) for c in self.checkpoints],
            "data": self.data.to_dict(),
            "layer_matching": self.layer_matching,
            "focus_layer": self.focus_layer,
            "layers": [_thaw(layer) for layer in self.layers],
            "expressivity": [_thaw(e) for e in self.expressivity],
            "trend": [_thaw(t) for t in self.trend],
            **report_tail(self),
        }
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrendResult":
        """Validate a trend.json dict and build the result; raises ReportError naming the bad key and the fix."""
        d = _header(d, "trend")
        return cls(
            **_common(d),
            checkpoints=tuple(_list(d, "checkpoints", "")),
            focus_layer=str(_str(d, "focus_layer", "")),
            trend=tuple(_list(d, "trend", "")),
            extra=_extra(d, cls._KEYS, ""),
        )


@dataclass(frozen=True)
class CompareResult:
    """Models compared on the same faces, in the compare.json layout; `to_dict()` is the JSON twin.

    The first model is the reference; every difference is "model minus
    reference". Typed for the same reason as `TrendResult`.
    """

    faceaudit_version: str
    created: str
    models: tuple[Mapping[str, Any], ...]
    data: DataInfo
    layers: tuple[Mapping[str, Any], ...]
    expressivity: tuple[Mapping[str, Any], ...]
    expressivity_differences: tuple[Mapping[str, Any], ...]
    fairness: tuple[Mapping[str, Any], ...] | None
    fairness_differences: tuple[Mapping[str, Any], ...]
    settings: Mapping[str, Any]
    fairness_skipped_reason: str | None = None
    layer_matching: str = "name"
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    demo: bool = False
    kind: str = "compare"
    schema_version: str = SCHEMA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("schema_version", "kind", "faceaudit_version", "created", "demo", "models", "data", "layer_matching",
             "layers", "expressivity", "expressivity_differences", "fairness", "fairness_skipped_reason",
             "fairness_differences", "warnings", "timings", "settings", "environment")

    def __post_init__(self) -> None:
        _validate(self, "compare", "models", "model")
        set_ = object.__setattr__
        set_(self, "expressivity_differences", _checked(self.expressivity_differences, "expressivity_differences",
                                                        _check_expressivity_difference))
        if self.fairness is not None:
            set_(self, "fairness", _checked(self.fairness, "fairness", _check_model_fairness))
        set_(self, "fairness_differences", _checked(self.fairness_differences, "fairness_differences",
                                                    _check_fairness_difference))

    @property
    def labels(self) -> list[str]:
        """The models' labels, the reference first."""
        return [str(m["label"]) for m in self.models]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict in the compare.json layout (keys in schema order; no NaN)."""
        base = {
            **report_head(self),
            "models": [_thaw(m) for m in self.models],
            "data": self.data.to_dict(),
            "layer_matching": self.layer_matching,
            "layers": [_thaw(layer) for layer in self.layers],
            "expressivity": [_thaw(e) for e in self.expressivity],
            "expressivity_differences": [_thaw(d) for d in self.expressivity_differences],
            "fairness": None if self.fairness is None else [_thaw(f) for f in self.fairness],
            "fairness_skipped_reason": self.fairness_skipped_reason,
            "fairness_differences": [_thaw(d) for d in self.fairness_differences],
            **report_tail(self),
        }
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CompareResult":
        """Validate a compare.json dict and build the result; raises ReportError naming the bad key and the fix."""
        d = _header(d, "compare")
        fairness = _req(d, "fairness", "")
        if fairness is not None and not isinstance(fairness, (list, tuple)):
            raise ReportError(f"report key 'fairness' must be a list or null, got {type(fairness).__name__}. {_FIX}")
        reason = d.get("fairness_skipped_reason")
        if reason is not None and not isinstance(reason, str):
            raise ReportError(f"report key 'fairness_skipped_reason' must be a string or null, got {reason!r}. {_FIX}")
        return cls(
            **_common(d),
            models=tuple(_list(d, "models", "")),
            expressivity_differences=tuple(_list(d, "expressivity_differences", "")),
            fairness=None if fairness is None else tuple(fairness),
            fairness_skipped_reason=reason,
            fairness_differences=tuple(_list(d, "fairness_differences", "")),
            extra=_extra(d, cls._KEYS, ""),
        )


def as_trend(report: "TrendResult | Mapping[str, Any]") -> TrendResult:
    """Accept a TrendResult or a trend.json dict; validate the dict."""
    return report if isinstance(report, TrendResult) else TrendResult.from_dict(report)


def as_compare(report: "CompareResult | Mapping[str, Any]") -> CompareResult:
    """Accept a CompareResult or a compare.json dict; validate the dict."""
    return report if isinstance(report, CompareResult) else CompareResult.from_dict(report)
