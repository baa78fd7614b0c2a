"""report.json schema: round trip, validation messages, JSON safety."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from test_report_data import full_report, no_fairness_report, warning_heavy_report

from faceaudit.errors import FaceAuditError
from faceaudit.report import SCHEMA_VERSION, AuditResult, ReportError, report_json
from faceaudit.report.schema import ModelInfo


@pytest.mark.parametrize("make", [full_report, no_fairness_report, warning_heavy_report])
def test_round_trip_is_lossless(make) -> None:
    d = make()
    result = AuditResult.from_dict(d)
    assert result.to_dict() == json.loads(json.dumps(d))
    assert AuditResult.from_dict(result.to_dict()) == result
    assert list(result.to_dict())[:3] == ["schema_version", "kind", "faceaudit_version"]


def test_result_is_frozen_and_typed() -> None:
    r = AuditResult.from_dict(full_report())
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.demo = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.expressivity[0]["mi"] = 1.0  # type: ignore[index]
    assert r.schema_version == SCHEMA_VERSION == "1.0"
    assert r.layers[-1].name == "embedding" and r.layers[-1].depth == 1.0
    assert r.data.attributes[1].groups[1].label == "black" and r.data.attributes[1].groups[1].count == 132
    assert r.fairness is not None and r.fairness[0]["groups"][0]["group"] == "female"


def test_extra_keys_are_kept() -> None:
    d = full_report()
    d["expressivity"][0]["future_key"] = {"a": [1, 2]}
    d["model"]["opset"] = 17
    d["something_new"] = "x"
    out = AuditResult.from_dict(d).to_dict()
    assert out["expressivity"][0]["future_key"] == {"a": [1, 2]}
    assert out["model"]["opset"] == 17
    assert out["something_new"] == "x"


def test_nan_and_numpy_become_json_safe() -> None:
    d = full_report()
    d["expressivity"][0]["mi"] = float("nan")
    d["expressivity"][1]["n"] = np.int64(3000)
    d["expressivity"][1]["seeds_mi"] = np.array([0.1, 0.2], dtype=np.float32)
    d["fairness"][0]["disparities"]["fmr"]["max_min_ratio"] = float("inf")
    r = AuditResult.from_dict(d)
    text = report_json(r)  # allow_nan=False: would raise on NaN
    back = json.loads(text)
    assert back["expressivity"][0]["mi"] is None
    assert back["expressivity"][1]["n"] == 3000 and isinstance(back["expressivity"][1]["n"], int)
    assert back["expressivity"][1]["seeds_mi"] == pytest.approx([0.1, 0.2])
    assert back["fairness"][0]["disparities"]["fmr"]["max_min_ratio"] is None


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("expressivity"), "'expressivity'"),
        (lambda d: d["expressivity"][3].pop("ci_low"), "'expressivity[3].ci_low'"),
        (lambda d: d["model"].pop("sha256"), "'model.sha256'"),
        (lambda d: d["data"]["attributes"][1].pop("n_valid"), "'data.attributes[1].n_valid'"),
        (lambda d: d["fairness"][1]["groups"][0].pop("fnmr"), "'fairness[1].groups[0].fnmr'"),
        (lambda d: d["expressivity"][0].__setitem__("mi", "high"), "'expressivity[0].mi' must be a number"),
        (lambda d: d.__setitem__("demo", "yes"), "'demo' must be true or false"),
        (lambda d: d["layers"][0].__setitem__("depth", 3), "'layers[0].depth' must lie in [0, 1]"),
        (lambda d: d["fairness"][0]["cross_group_fmr"]["matrix"].pop(), "cross_group_fmr.matrix"),
    ],
)
def test_invalid_reports_name_the_key_and_the_fix(mutate, needle) -> None:
    d = full_report()
    mutate(d)
    with pytest.raises(ReportError) as info:
        AuditResult.from_dict(d)
    msg = str(info.value)
    assert needle in msg
    assert "faceaudit run" in msg or "Regenerate" in msg
    assert isinstance(info.value, FaceAuditError)


def test_wrong_version_and_kind() -> None:
    d = full_report()
    d["schema_version"] = "2.0"
    with pytest.raises(ReportError, match=r"schema_version '2.0'.*reads 1.x"):
        AuditResult.from_dict(d)
    d = full_report()
    d["schema_version"] = "1.3"  # newer minor of the same major: readable
    assert AuditResult.from_dict(d).schema_version == "1.3"
    d = full_report()
    d["kind"] = "trend"
    with pytest.raises(ReportError, match="kind 'trend'"):
        AuditResult.from_dict(d)
    with pytest.raises(ReportError, match="must be a JSON object"):
        AuditResult.from_dict([1, 2])  # type: ignore[arg-type]


def test_direct_construction_validates_entries() -> None:
    r = AuditResult.from_dict(full_report())
    bad = dict(r.expressivity[0])
    del bad["null_mi"]
    with pytest.raises(ReportError, match=r"expressivity\[0\].null_mi"):
        dataclasses.replace(r, expressivity=(bad,))
    m = ModelInfo(path="m.onnx", sha256="0" * 64, backend="onnx", input={"mean": np.float32(127.5)})
    assert m.to_dict()["input"] == {"mean": 127.5}


@pytest.mark.parametrize(
    ("where", "value", "key"),
    [
        (("fairness", 1, "cross_group_fmr", "matrix", 0, 0), [], "fairness[1].cross_group_fmr.matrix"),
        (("fairness", 0, "groups", 0, "fmr_ci"), "wide", "fairness[0].groups[0].fmr_ci"),
        (("fairness", 0, "disparities", "fnmr", "max_min_ratio"), {"x": 1}, "fairness[0].disparities.fnmr.max_min_ratio"),
        (("fairness", 0, "disparities", "fmr", "ratio_to_best"), {"female": "big"}, "ratio_to_best"),
        (("expressivity", 0, "curves", "train"), [0.0, "x"], "expressivity[0].curves.train"),
        (("expressivity", 0, "warnings"), [1, 2], "expressivity[0].warnings"),
        (("fairness", 0, "warnings"), 5, "fairness[0].warnings"),
        (("data", "attributes", 0), [], "data.attributes[0]"),
    ],
)
def test_nested_values_of_the_wrong_type_name_their_key(where, value, key) -> None:
    # found by tests/test_properties.py: these used to pass validation and crash the renderer (exit 1)
    d = full_report()
    parent = d
    for k in where[:-1]:
        parent = parent[k]
    parent[where[-1]] = value
    with pytest.raises(ReportError, match=key.replace("[", r"\[").replace("]", r"\]")):
        AuditResult.from_dict(d)


def test_damaged_trend_and_compare_json_is_a_report_error(tmp_path) -> None:
    from faceaudit.report.compare_render import load_compare
    from faceaudit.report.trend_render import load_trend

    for kind, load in (("trend", load_trend), ("compare", load_compare)):
        keys = ("faceaudit_version", "created", "checkpoints", "models", "data", "focus_layer", "layers",
                "expressivity", "expressivity_differences", "fairness", "fairness_differences", "trend", "settings")
        p = tmp_path / f"{kind}.json"
        p.write_text(json.dumps({**{k: None for k in keys}, "schema_version": "1.0", "kind": kind}), encoding="utf-8")
        with pytest.raises(ReportError, match=f"{kind}.json does not follow the {kind}.json layout"):
            load(p)


def _entry(who: str, label: str) -> dict:
    return {who: label, "layer": "final", "layer_name": "embedding", "attribute": "age", "mi": 0.5, "ci_low": 0.4,
            "ci_high": 0.6, "null_mi": 0.0, "normalized": 0.6, "n": 100, "estimator": "mine", "kind": "continuous",
            "warnings": []}


def _difference(delta: float) -> dict:
    return {"delta": delta, "se": 0.05, "threshold": 0.098, "significant": abs(delta) > 0.098}


def trend_report() -> dict:
    """A small valid trend.json: two checkpoints, one layer, age followed across them."""
    data = {"manifest": "faces.csv", "n_images": 100, "n_used": 100, "n_failed": 0, "failed": [],
            "attributes": [{"name": "age", "kind": "continuous", "n_valid": 100, "n_missing": 0, "groups": []}],
            "identity": None}
    return {
        "schema_version": "1.0", "kind": "trend", "faceaudit_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00",
        "demo": False,
        "checkpoints": [{"label": lab, "index": i, "path": f"{lab}.onnx", "sha256": "0" * 64, "backend": "onnx",
                         "final_layer": "embedding", "input": {}, "input_check": None} for i, lab in enumerate("ab")],
        "data": data, "layer_matching": "name", "focus_layer": "final",
        "layers": [{"key": "final", "depth": 1.0, "names": {"a": "embedding", "b": "embedding"},
                    "depths": {"a": 1.0, "b": 1.0}, "final": True}],
        "expressivity": [_entry("checkpoint", "a"), _entry("checkpoint", "b")],
        "trend": [{"attribute": "age", "layer": "final", "mi": [0.5, 0.5], "ci_low": [0.4, 0.4], "ci_high": [0.6, 0.6],
                   "normalized": [0.6, 0.6], "peak": "a", "peak_index": 0, "rise": _difference(0.0),
                   "fall": _difference(0.0), "first_to_last": _difference(0.0), "shape": "flat"}],
        "warnings": [], "timings": {"total_s": 1.0}, "settings": {"attrs": ["age"], "z": 1.96}, "environment": {},
    }


def compare_report() -> dict:
    """A small valid compare.json: two models, one layer, no fairness."""
    d = trend_report()
    d.update(kind="compare", models=d.pop("checkpoints"), expressivity=[_entry("model", "a"), _entry("model", "b")],
             expressivity_differences=[{"layer": "final", "attribute": "age", "model_a": "a", "model_b": "b",
                                        "mi_a": 0.5, "mi_b": 0.5, **_difference(0.0)}],
             fairness=None, fairness_skipped_reason="no identities", fairness_differences=[])
    del d["trend"], d["focus_layer"]
    return d


def test_trend_and_compare_results_round_trip_their_json() -> None:
    from faceaudit.report.multi_schema import CompareResult, TrendResult

    for cls, d in ((TrendResult, trend_report()), (CompareResult, compare_report())):
        result = cls.from_dict(d)
        assert result.labels == ["a", "b"]
        assert result.to_dict() == d  # to_dict is the JSON, key for key
        assert cls.from_dict(result.to_dict()) == result
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.created = "now"  # type: ignore[misc]
    assert list(TrendResult.from_dict(trend_report()).to_dict()) == list(trend_report())  # schema order


@pytest.mark.parametrize(
    ("kind", "where", "value", "key"),
    [
        ("trend", ("checkpoints", 0, "label"), 3, "checkpoints[0].label"),
        ("trend", ("trend", 0, "peak_index"), 5, "trend[0].peak_index"),
        ("trend", ("trend", 0, "mi"), [0.5], "trend[0].mi"),
        ("trend", ("trend", 0, "rise", "significant"), "yes", "trend[0].rise.significant"),
        ("trend", ("layers", 0, "names"), {"a": 1}, "layers[0].names"),
        ("trend", ("expressivity", 1, "checkpoint"), None, "expressivity[1].checkpoint"),
        ("trend", ("settings", "attrs"), "age", "settings.attrs"),
        ("trend", ("focus_layer",), None, "focus_layer"),
        ("compare", ("expressivity_differences", 0, "mi_b"), "big", "expressivity_differences[0].mi_b"),
        ("compare", ("fairness",), {"x": 1}, "fairness"),
        ("compare", ("models", 1, "reference"), "no", "models[1].reference"),
        ("compare", ("kind",), "trend", "kind"),
    ],
)
def test_trend_and_compare_results_name_the_bad_key(kind: str, where: tuple, value: object, key: str) -> None:
    from faceaudit.report.multi_schema import CompareResult, TrendResult

    d = trend_report() if kind == "trend" else compare_report()
    parent = d
    for k in where[:-1]:
        parent = parent[k]
    parent[where[-1]] = value
    cls = TrendResult if kind == "trend" else CompareResult
    with pytest.raises(ReportError, match=re.escape(f"'{key}'")):
        cls.from_dict(d)
