"""The audit result schema: frozen dataclasses <-> report.json.

One schema is shared by the library (``run_audit`` returns an `AuditResult`),
the JSON twin of the report (``report.json``) and the HTML renderer, so the
numbers in the HTML are exactly the numbers in the JSON. The fixed parts
(model, data, layers) are modelled field by field; the expressivity and
fairness entries are produced by their own rooms and are kept as validated,
read-only mappings (their required keys are checked, extra keys are kept).

Non-finite floats (NaN, +-inf) have no JSON spelling, so they are stored as
``None`` (``null`` in JSON) and shown as a dash in the HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faceaudit.errors import FaceAuditError
from faceaudit.jsonsafe import NotJSONError, json_safe

SCHEMA_VERSION = "1.0"
"""Version of the report.json layout written by this faceaudit (major.minor)."""

REPORT_KINDS = ("audit",)
"""Report kinds this version can read and render."""

_FIX = ("Regenerate the report with the command that wrote it (`faceaudit run`, `trend` or `compare`), or fix the "
        "JSON by hand following docs/report-schema.md.")

EXPRESSIVITY_REQUIRED = (
    "layer",
    "attribute",
    "mi",
    "ci_low",
    "ci_high",
    "null_mi",
    "normalized",
    "n",
    "estimator",
    "kind",
    "warnings",
)
"""Keys every expressivity entry must carry (others are kept as they are)."""

FAIRNESS_REQUIRED = ("attribute", "target_fmr", "threshold", "groups")
"""Keys every fairness entry must carry (others are kept as they are)."""

FAIRNESS_GROUP_REQUIRED = ("group", "fmr", "fnmr")
"""Keys every per-group row of a fairness entry must carry."""


class ReportError(FaceAuditError, ValueError):
    """A report (dict or report.json) does not follow the report schema."""


# --------------------------------------------------------------------------- helpers


def _plain(value: Any, where: str) -> Any:
    """Deep-convert to read-only JSON-safe values (see :func:`faceaudit.jsonsafe.json_safe`)."""
    try:
        return json_safe(value, frozen=True, strict=True, where=where)
    except NotJSONError as e:
        raise ReportError(
            f"report value at '{e.where}' has type {e.type_name}, which JSON cannot hold. "
            "Convert it to a number, string, list or dict before building the report."
        ) from None


def _thaw(value: Any) -> Any:
    """Deep-convert read-only mappings/tuples back to dicts/lists for JSON."""
    return json_safe(value)


def _req(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ReportError(f"report '{where}' must be an object (dict), got {type(d).__name__}. {_FIX}")
    if key not in d:
        path = f"{where}.{key}" if where else key
        raise ReportError(f"report is missing key '{path}'. {_FIX}")
    return d[key]


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _str(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    v = _req(d, key, where) if not optional else d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ReportError(f"report key '{_where(where, key)}' must be a string, got {v!r}. {_FIX}")
    return v


def _num(d: Mapping[str, Any], key: str, where: str, *, nullable: bool = True) -> float | int | None:
    v = _req(d, key, where)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"report key '{_where(where, key)}' must be a number{' or null' if nullable else ''}, got {v!r}. {_FIX}")
    return v


def _int(d: Mapping[str, Any], key: str, where: str, *, nullable: bool = False) -> int | None:
    v = _req(d, key, where)
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ReportError(f"report key '{_where(where, key)}' must be a whole number, got {v!r}. {_FIX}")
    return int(v)


def _list(d: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    v = _req(d, key, where)
    if not isinstance(v, (list, tuple)):
        raise ReportError(f"report key '{_where(where, key)}' must be a list, got {type(v).__name__}. {_FIX}")
    return v


def _map(d: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    v = _req(d, key, where)
    if not isinstance(v, Mapping):
        raise ReportError(f"report key '{_where(where, key)}' must be an object (dict), got {type(v).__name__}. {_FIX}")
    return v


def _is_num(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _opt_nums(d: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    """Optional keys the renderer reads as numbers: absent, null or a number."""
    for key in keys:
        if key in d:
            _num(d, key, where)


def _opt_num_list(d: Mapping[str, Any], key: str, where: str, length: int | None = None) -> None:
    """An optional list of numbers (or nulls), e.g. a [low, high] interval."""
    v = d.get(key)
    if v is None:
        return
    if not isinstance(v, (list, tuple)) or not all(_is_num(x) for x in v) or (length is not None and len(v) != length):
        shape = f"a list of {length} numbers or nulls" if length else "a list of numbers"
        raise ReportError(f"report key '{_where(where, key)}' must be {shape}, got {v!r}. {_FIX}")


def _opt_num_map(d: Mapping[str, Any], key: str, where: str) -> None:
    """An optional object whose values are numbers (or nulls)."""
    v = d.get(key)
    if v is None:
        return
    if not isinstance(v, Mapping) or not all(_is_num(x) for x in v.values()):
        raise ReportError(f"report key '{_where(where, key)}' must be an object of numbers, got {v!r}. {_FIX}")


def _opt_strs(d: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    for key in keys:
        _str(d, key, where, optional=True)


def _extra(d: Mapping[str, Any], known: Sequence[str], where: str) -> Mapping[str, Any]:
    return _plain({k: v for k, v in d.items() if k not in known}, where)


def _with_extra(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out.setdefault(k, _thaw(v))
    return out


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class ModelInfo:
    """The audited model file: where it was, its SHA-256 and how it was read.

    `backend_package` and `backend_version` name the installed package that
    provided the backend (faceaudit itself or a plugin), so an audit made with a
    plugin can be reproduced; reports written before they existed lack them.
    """

    path: str
    sha256: str
    backend: str
    input: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    backend_package: str | None = None
    backend_version: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _plain(dict(self.input), "model.input"))
        object.__setattr__(self, "extra", _plain(dict(self.extra), "model"))

    _KEYS = ("path", "sha256", "backend", "backend_package", "backend_version", "input")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict in the report.json layout."""
        base: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "backend": self.backend}
        if self.backend_package is not None:
            base["backend_package"] = self.backend_package
            base["backend_version"] = self.backend_version
        base["input"] = _thaw(self.input)
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "model") -> "ModelInfo":
        """Validate and build from the report.json layout."""
        inp = d.get("input") if isinstance(d, Mapping) else None
        return cls(
            path=str(_str(d, "path", where)),
            sha256=str(_str(d, "sha256", where)),
            backend=str(_str(d, "backend", where)),
            input=_map(d, "input", where) if inp is not None else {},
            extra=_extra(d, cls._KEYS, where),
            backend_package=_str(d, "backend_package", where, optional=True),
            backend_version=_str(d, "backend_version", where, optional=True),
        )


@dataclass(frozen=True)
class FailedImage:
    """An image that could not be used (decode or face failure), with the reason."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class GroupCount:
    """Number of usable images in one group of an attribute."""

    label: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {"label": self.label, "count": self.count}


@dataclass(frozen=True)
class AttributeSummary:
    """One audited attribute: its kind, how many rows carry it, and its groups."""

    name: str
    kind: str
    n_valid: int
    n_missing: int
    groups: tuple[GroupCount, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("name", "kind", "n_valid", "n_missing", "groups")

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "extra", _plain(dict(self.extra), f"attribute {self.name}"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        base = {
            "name": self.name,
            "kind": self.kind,
            "n_valid": self.n_valid,
            "n_missing": self.n_missing,
            "groups": [g.to_dict() for g in self.groups],
        }
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "AttributeSummary":
        """Validate and build from the report.json layout."""
        if not isinstance(d, Mapping):
            raise ReportError(f"report '{where}' must be an object (dict), got {type(d).__name__}. {_FIX}")
        groups = []
        for i, g in enumerate(_list(d, "groups", where) if d.get("groups") is not None else []):
            gw = f"{where}.groups[{i}]"
            label = _req(g, "label", gw)
            groups.append(GroupCount(label=str(label), count=int(_int(g, "count", gw) or 0)))
        return cls(
            name=str(_str(d, "name", where)),
            kind=str(_str(d, "kind", where)),
            n_valid=int(_int(d, "n_valid", where) or 0),
            n_missing=int(_int(d, "n_missing", where) or 0),
            groups=tuple(groups),
            extra=_extra(d, cls._KEYS, where),
        )


@dataclass(frozen=True)
class DataInfo:
    """The manifest that was audited and how many of its images were usable."""

    manifest: str
    n_images: int
    n_used: int
    n_failed: int
    failed: tuple[FailedImage, ...] = ()
    attributes: tuple[AttributeSummary, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("manifest", "n_images", "n_used", "n_failed", "failed", "attributes")

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed", tuple(self.failed))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "extra", _plain(dict(self.extra), "data"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        base = {
            "manifest": self.manifest,
            "n_images": self.n_images,
            "n_used": self.n_used,
            "n_failed": self.n_failed,
            "failed": [f.to_dict() for f in self.failed],
            "attributes": [a.to_dict() for a in self.attributes],
        }
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "data") -> "DataInfo":
        """Validate and build from the report.json layout."""
        failed = []
        for i, f in enumerate(_list(d, "failed", where)):
            fw = f"{where}.failed[{i}]"
            failed.append(FailedImage(path=str(_req(f, "path", fw)), reason=str(_req(f, "reason", fw))))
        attrs = [
            AttributeSummary.from_dict(a, f"{where}.attributes[{i}]") for i, a in enumerate(_list(d, "attributes", where))
        ]
        return cls(
            manifest=str(_str(d, "manifest", where)),
            n_images=int(_int(d, "n_images", where) or 0),
            n_used=int(_int(d, "n_used", where) or 0),
            n_failed=int(_int(d, "n_failed", where) or 0),
            failed=tuple(failed),
            attributes=tuple(attrs),
            extra=_extra(d, cls._KEYS, where),
        )


@dataclass(frozen=True)
class LayerSummary:
    """One audited layer: the model's own name, feature size and relative depth (0 = input, 1 = output)."""

    name: str
    dim: int | None
    kind: str
    shape: tuple[Any, ...] | None
    depth: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("name", "dim", "kind", "shape", "depth")

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", None if self.shape is None else _plain(list(self.shape), "shape"))
        object.__setattr__(self, "extra", _plain(dict(self.extra), f"layer {self.name}"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        base = {
            "name": self.name,
            "dim": self.dim,
            "kind": self.kind,
            "shape": None if self.shape is None else _thaw(self.shape),
            "depth": self.depth,
        }
        return _with_extra(base, self.extra)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "LayerSummary":
        """Validate and build from the report.json layout."""
        shape = d.get("shape") if isinstance(d, Mapping) else None
        if shape is not None and not isinstance(shape, (list, tuple)):
            raise ReportError(f"report key '{where}.shape' must be a list or null, got {shape!r}. {_FIX}")
        depth = _num(d, "depth", where, nullable=False)
        if not 0.0 <= float(depth) <= 1.0:  # type: ignore[arg-type]
            raise ReportError(f"report key '{where}.depth' must lie in [0, 1] (relative depth), got {depth!r}. {_FIX}")
        return cls(
            name=str(_str(d, "name", where)),
            dim=_int(d, "dim", where, nullable=True) if "dim" in d else None,
            kind=str(_str(d, "kind", where, optional=True) or ""),
            shape=None if shape is None else tuple(shape),
            depth=float(depth),  # type: ignore[arg-type]
            extra=_extra(d, cls._KEYS, where),
        )


def _check_expressivity(e: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(e, Mapping):
        raise ReportError(f"report '{where}' must be an object (dict), got {type(e).__name__}. {_FIX}")
    e = _plain(e, where)
    for key in EXPRESSIVITY_REQUIRED:
        _req(e, key, where)
    for key in ("mi", "ci_low", "ci_high", "null_mi", "normalized"):
        _num(e, key, where)
    _int(e, "n", where)
    _str(e, "layer", where)
    _str(e, "attribute", where)
    _opt_strs(e, ("kind", "estimator"), where)
    w = e["warnings"]
    if not isinstance(w, (list, tuple)) or not all(isinstance(x, str) for x in w):
        raise ReportError(f"report key '{where}.warnings' must be a list of strings. {_FIX}")
    _opt_nums(e, ("null_ci_high", "null_high", "entropy_y", "raw_mi", "probe_mi", "reduced_dim"), where)
    _opt_num_list(e, "null_ci", where, 2)
    _opt_num_list(e, "seeds_mi", where)
    curves = e.get("curves")
    if curves is not None:
        if not isinstance(curves, Mapping):
            raise ReportError(f"report key '{where}.curves' must be an object of number lists. {_FIX}")
        for k in curves:
            _opt_num_list(curves, k, f"{where}.curves")
    return e


def _check_fairness(f: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(f, Mapping):
        raise ReportError(f"report '{where}' must be an object (dict), got {type(f).__name__}. {_FIX}")
    f = _plain(f, where)
    for key in FAIRNESS_REQUIRED:
        _req(f, key, where)
    _str(f, "attribute", where)
    _num(f, "target_fmr", where)
    _num(f, "threshold", where)
    for i, g in enumerate(_list(f, "groups", where)):
        gw = f"{where}.groups[{i}]"
        for key in FAIRNESS_GROUP_REQUIRED:
            _req(g, key, gw)
        _num(g, "fmr", gw)
        _num(g, "fnmr", gw)
        _opt_nums(g, ("n_identities", "n_images", "n_genuine_pairs", "n_impostor_pairs", "n_false_matches",
                      "n_false_non_matches"), gw)
        _opt_num_list(g, "fmr_ci", gw, 2)
        _opt_num_list(g, "fnmr_ci", gw, 2)
        if not isinstance(g["group"], (str, int, float)) or isinstance(g["group"], bool):
            raise ReportError(f"report key '{gw}.group' must be a group label (a string), got {g['group']!r}. {_FIX}")
    for key in ("disparities", "summary", "cross_group_fmr", "settings"):
        if f.get(key) is not None:
            _map(f, key, where)
    fw = f.get("warnings")
    if fw is not None and (not isinstance(fw, (list, tuple)) or not all(isinstance(x, str) for x in fw)):
        raise ReportError(f"report key '{where}.warnings' must be a list of strings. {_FIX}")
    for metric, d in (f.get("disparities") or {}).items():
        dw = f"{where}.disparities.{metric}"
        if not isinstance(d, Mapping):
            raise ReportError(f"report key '{dw}' must be an object (dict), got {type(d).__name__}. {_FIX}")
        _opt_nums(d, ("max_min_ratio", "difference"), dw)
        _opt_strs(d, ("worst_group", "best_group"), dw)
        _opt_num_map(d, "ratio_to_best", dw)
        used = d.get("groups_used")
        if used is not None and (not isinstance(used, (list, tuple)) or not all(isinstance(x, str) for x in used)):
            raise ReportError(f"report key '{dw}.groups_used' must be a list of group labels, got {used!r}. {_FIX}")
    summary = f.get("summary") or {}
    _opt_nums(summary, ("fdr", "inequity_rate", "garbe", "garbe_fmr", "garbe_fnmr", "alpha"), f"{where}.summary")
    for key in ("fdr_ci", "inequity_rate_ci", "garbe_ci"):
        _opt_num_list(summary, key, f"{where}.summary", 2)
    settings = f.get("settings") or {}
    _opt_nums(settings, ("tolerance_ratio",), f"{where}.settings")
    cg = f.get("cross_group_fmr")
    if cg is not None:
        cw = f"{where}.cross_group_fmr"
        groups = _list(cg, "groups", cw)
        if not all(isinstance(x, str) for x in groups):
            raise ReportError(f"report key '{cw}.groups' must be a list of group labels, got {groups!r}. {_FIX}")
        for key in ("matrix", "pairs", "pairs_available"):
            if key == "matrix" or cg.get(key) is not None:
                m = _list(cg, key, cw)
                if len(m) != len(groups) or any(
                    not isinstance(r, (list, tuple)) or len(r) != len(groups) or not all(_is_num(x) for x in r) for r in m
                ):
                    raise ReportError(
                        f"report key '{cw}.{key}' must be a {len(groups)}x{len(groups)} list of lists of numbers "
                        f"(one row and column per group). {_FIX}"
                    )
    return f


# --------------------------------------------------------------------------- result


def report_head(result: Any) -> dict[str, Any]:
    """The keys every report (audit, trend, compare) starts with, from its typed result, in schema order."""
    return {
        "schema_version": result.schema_version,
        "kind": result.kind,
        "faceaudit_version": result.faceaudit_version,
        "created": result.created,
        "demo": result.demo,
    }


def report_tail(result: Any) -> dict[str, Any]:
    """The keys every report ends with (warnings, timings, settings, environment), JSON-safe, in schema order."""
    return {
        "warnings": list(result.warnings),
        "timings": _thaw(result.timings),
        "settings": _thaw(result.settings),
        "environment": _thaw(result.environment),
    }


@dataclass(frozen=True)
class AuditResult:
    """Everything one audit found, in the report.json layout; `to_dict()` is the JSON twin."""

    faceaudit_version: str
    created: str
    model: ModelInfo
    data: DataInfo
    layers: tuple[LayerSummary, ...]
    expressivity: tuple[Mapping[str, Any], ...]
    fairness: tuple[Mapping[str, Any], ...] | None = None
    fairness_skipped_reason: str | None = None
    warnings: tuple[str, ...] = ()
    timings: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    demo: bool = False
    kind: str = "audit"
    schema_version: str = SCHEMA_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = (
        "schema_version",
        "kind",
        "faceaudit_version",
        "created",
        "demo",
        "model",
        "data",
        "layers",
        "expressivity",
        "fairness",
        "fairness_skipped_reason",
        "warnings",
        "timings",
        "settings",
        "environment",
    )

    def __post_init__(self) -> None:
        _check_version(self.schema_version)
        if self.kind not in REPORT_KINDS:
            raise ReportError(
                f"report kind {self.kind!r} is not supported by this faceaudit (it reads {', '.join(REPORT_KINDS)}). "
                "Upgrade faceaudit or regenerate the report."
            )
        setattr_ = object.__setattr__
        setattr_(self, "layers", tuple(self.layers))
        setattr_(
            self,
            "expressivity",
            tuple(_check_expressivity(e, f"expressivity[{i}]") for i, e in enumerate(self.expressivity)),
        )
        if self.fairness is not None:
            setattr_(self, "fairness", tuple(_check_fairness(f, f"fairness[{i}]") for i, f in enumerate(self.fairness)))
        setattr_(self, "warnings", tuple(str(w) for w in self.warnings))
        for name in ("timings", "settings", "environment", "extra"):
            setattr_(self, name, _plain(dict(getattr(self, name)), name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict in the report.json layout (keys in schema order; no NaN)."""
        base = {
            **report_head(self),
            "model": self.model.to_dict(),
            "data": self.data.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "expressivity": [_thaw(e) for e in self.expressivity],
            "fairness": None if self.fairness is None else [_thaw(f) for f in self.fairness],
            "fairness_skipped_reason": self.fairness_skipped_reason,
            **report_tail(self),
        }
        return _with_extra(base, self.extra)

    def expressivity_frame(self) -> Any:
        """Expressivity as a pandas DataFrame: one row per layer x attribute, columns named as in report.json."""
        from faceaudit.report.frames import expressivity_frame

        return expressivity_frame(self.to_dict())

    def fairness_frame(self) -> Any:
        """Verification fairness as a pandas DataFrame: one row per attribute x group, columns as in report.json."""
        from faceaudit.report.frames import fairness_frame

        return fairness_frame(self.to_dict())

    def _repr_html_(self) -> str:
        """Jupyter shows the findings and the expressivity heatmap inline."""
        from faceaudit.report.frames import notebook_html

        return notebook_html(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditResult":
        """Validate a report.json dict and build the result; raises ReportError naming the bad key and the fix."""
        if not isinstance(d, Mapping):
            raise ReportError(f"a report must be a JSON object (dict), got {type(d).__name__}. {_FIX}")
        d = _plain(d, "")  # numpy values -> Python, NaN -> None, before any type check
        version = _req(d, "schema_version", "")
        _check_version(version)
        kind = _str(d, "kind", "")
        demo = _req(d, "demo", "")
        if not isinstance(demo, bool):
            raise ReportError(f"report key 'demo' must be true or false, got {demo!r}. {_FIX}")
        fairness_raw = _req(d, "fairness", "")
        if fairness_raw is not None and not isinstance(fairness_raw, (list, tuple)):
            raise ReportError(f"report key 'fairness' must be a list or null, got {type(fairness_raw).__name__}. {_FIX}")
        reason = d.get("fairness_skipped_reason")
        if reason is not None and not isinstance(reason, str):
            raise ReportError(f"report key 'fairness_skipped_reason' must be a string or null, got {reason!r}. {_FIX}")
        warnings = _list(d, "warnings", "")
        return cls(
            schema_version=str(version),
            kind=str(kind),
            faceaudit_version=str(_str(d, "faceaudit_version", "")),
            created=str(_str(d, "created", "")),
            demo=demo,
            model=ModelInfo.from_dict(_map(d, "model", "")),
            data=DataInfo.from_dict(_map(d, "data", "")),
            layers=tuple(LayerSummary.from_dict(x, f"layers[{i}]") for i, x in enumerate(_list(d, "layers", ""))),
            expressivity=tuple(_list(d, "expressivity", "")),
            fairness=None if fairness_raw is None else tuple(fairness_raw),
            fairness_skipped_reason=reason,
            warnings=tuple(str(w) for w in warnings),
            timings=_map(d, "timings", ""),
            settings=_map(d, "settings", ""),
            environment=_map(d, "environment", ""),
            extra=_extra(d, cls._KEYS, ""),
        )


def _check_version(version: Any) -> None:
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ReportError(
            f"report schema_version {version!r} cannot be read by this faceaudit (it reads {SCHEMA_VERSION.split('.')[0]}.x). "
            "Regenerate the report with this faceaudit version, or install the faceaudit version that wrote it."
        )


def as_result(report: "AuditResult | Mapping[str, Any]") -> AuditResult:
    """Accept either an AuditResult or a report.json dict; validate the dict."""
    if isinstance(report, AuditResult):
        return report
    return AuditResult.from_dict(report)

__all__ = [
    "AttributeSummary",
    "AuditResult",
    "DataInfo",
    "EXPRESSIVITY_REQUIRED",
    "FAIRNESS_GROUP_REQUIRED",
    "FAIRNESS_REQUIRED",
    "FailedImage",
    "GroupCount",
    "LayerSummary",
    "ModelInfo",
    "REPORT_KINDS",
    "ReportError",
    "SCHEMA_VERSION",
    "as_result",
    "report_head",
    "report_tail",
]
