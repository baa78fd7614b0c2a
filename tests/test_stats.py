"""The shared statistics (significance of differences, disparities), JSON values and missing values, on known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest

from faceaudit import stats
from faceaudit.data import is_missing
from faceaudit.jsonsafe import NotJSONError, json_safe


def test_difference_known_answers() -> None:
    d = stats.difference(0.10, 0.20, 0.03, 0.04)  # se = sqrt(0.03^2 + 0.04^2) = 0.05
    assert d["delta"] == pytest.approx(0.10) and d["se"] == pytest.approx(0.05)
    assert d["threshold"] == pytest.approx(1.96 * 0.05) and d["significant"] is True
    assert stats.difference(0.10, 0.20, 0.03, 0.04, z=2.5)["significant"] is False  # 0.1 < 0.125
    assert stats.difference(0.20, 0.10, 0.03, 0.04)["significant"] is True  # the sign does not matter
    assert stats.difference(0.20, 0.10, 0.03, 0.04)["delta"] == pytest.approx(-0.10)


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        ((0.1, 0.9, 0.0, 0.0), {}),  # no uncertainty measured: no claim
        ((0.1, 0.9, None, 0.01), {}),  # an unknown se
        ((0.1, 0.9, 0.01, 0.01), {"testable": False}),  # e.g. a small group
    ],
)
def test_difference_without_a_usable_se_is_never_significant(args, kw) -> None:
    assert stats.difference(*args, **kw)["significant"] is False


def test_difference_of_a_missing_value_is_none() -> None:
    assert stats.difference(None, 0.3, 0.01, 0.01) == {"delta": None, "se": None, "threshold": None, "significant": False}


def test_se_from_ci() -> None:
    assert stats.se_from_ci(0.1, 0.5) == pytest.approx(0.4 / 3.92)
    assert stats.se_from_ci(0.5, 0.1) == 0.0
    assert stats.se_from_ci(None, 0.5) is None


def test_trend_and_compare_use_the_same_rule() -> None:
    from faceaudit.compare import fairness_differences
    from faceaudit.trend import difference as trend_difference

    # expressivity entries: se from the entry, else from its 95% CI; none at all is no uncertainty, no claim
    a, b = {"mi": 0.30, "se": 0.03}, {"mi": 0.45, "ci_low": 0.45 - 1.96 * 0.04, "ci_high": 0.45 + 1.96 * 0.04}
    assert trend_difference(a, b) == pytest.approx(stats.difference(0.30, 0.45, 0.03, 0.04))
    assert trend_difference({"mi": 0.1}, {"mi": 0.5})["significant"] is False

    def entry(model: str, fnmr: dict[str, float], small: tuple[str, ...] = ()) -> dict:
        groups = [{"group": g, "fnmr": v, "fnmr_ci": [v - 0.01 * 1.96, v + 0.01 * 1.96], "fmr": None,
                   "n_genuine_pairs": 500, "small": g in small} for g, v in fnmr.items()]
        return {"model": model, "attribute": "sex", "groups": groups}

    report = {"settings": {}, "models": [{"label": "A"}, {"label": "B"}],
              "fairness": [entry("A", {"f": 0.05, "m": 0.02, "x": 0.5}, small=("x",)), entry("B", {"f": 0.12, "m": 0.02})]}
    disp = next(d for d in fairness_differences(report) if d["metric"] == "fnmr" and d["quantity"] == "disparity")
    # A compares f and m (x is small), B compares f and m: gaps 0.03 and 0.10, each with se sqrt(2) * 0.01
    assert (disp["worst_a"], disp["best_a"], disp["worst_b"]) == ("f", "m", "f")
    expected = stats.difference(0.03, 0.10, math.sqrt(2) * 0.01, math.sqrt(2) * 0.01)
    assert {k: disp[k] for k in expected} == pytest.approx(expected)
    assert disp["significant"] is True


def test_comparable_groups_leave_out_small_groups_while_two_others_remain() -> None:
    rates = {"a": 0.1, "b": 0.2, "c": 0.9}
    assert stats.comparable_groups(rates, {"c"}) == {"a": 0.1, "b": 0.2}
    assert stats.comparable_groups(rates, {"b", "c"}) == rates  # one large group: compare them all
    assert stats.comparable_groups(rates, ()) == rates


def test_disparity_known_answers() -> None:
    d = stats.disparity({"a": 0.02, "b": 0.0, "c": 0.01}, {"a": 100, "b": 50, "c": 200})
    # b's zero rate is floored at 0.5/50 = 0.01 for ratios; the difference uses raw rates
    assert (d["worst_group"], d["best_group"]) == ("a", "b")
    assert d["max_min_ratio"] == pytest.approx(2.0) and d["difference"] == pytest.approx(0.02)
    assert d["ratio_to_best"] == pytest.approx({"a": 2.0, "b": 1.0, "c": 1.0})
    assert d["zero_rate_groups"] == ["b"] and d["upper_limit_95"] == pytest.approx({"b": 0.06})
    assert d["no_errors_observed"] is False


def test_disparity_ratio_is_at_least_one_when_the_best_floor_exceeds_the_worst_rate() -> None:
    # 10 false matches in 10,000 pairs against none in 50: the floor 0.01 is above 0.001, no evidence of a gap
    d = stats.disparity({"a": 0.001, "b": 0.0}, {"a": 10_000, "b": 50})
    assert d["max_min_ratio"] == 1.0 and d["worst_group"] == "a"


def test_disparity_of_zero_or_equal_rates_names_no_group() -> None:
    zero = stats.disparity({"a": 0.0, "b": 0.0}, {"a": 10, "b": 300})
    assert zero["max_min_ratio"] is None and zero["no_errors_observed"] is True and zero["worst_group"] is None
    assert zero["upper_limit_95"] == pytest.approx({"a": 0.3, "b": 0.01}) and zero["difference"] == 0.0
    equal = stats.disparity({"a": 0.2, "b": 0.2}, {"a": 10, "b": 30})
    assert equal["max_min_ratio"] == 1.0 and equal["worst_group"] is None and equal["ratio_to_best"] == {"a": 1.0, "b": 1.0}
    assert stats.disparity({"a": 0.2}, {"a": 10})["difference"] is None


def test_extremes_ties_go_to_the_first_group() -> None:
    assert stats.extremes({"a": 0.1, "b": 0.3, "c": 0.3, "d": 0.1}) == ("b", "a")


def test_json_safe_known_answers() -> None:
    value = {1: np.float32(0.5), "nan": float("nan"), "inf": np.float64(-np.inf), "n": np.int64(3),
             "flag": np.bool_(True), "t": (1, [np.arange(2)]), "p": Path("a") / "b", "s": "x", "none": None}
    out = json_safe(value)
    assert out == {"1": 0.5, "nan": None, "inf": None, "n": 3, "flag": True, "t": [1, [[0, 1]]], "p": str(Path("a/b")),
                   "s": "x", "none": None}
    assert type(out["n"]) is int and type(out["flag"]) is bool and type(out["1"]) is float
    json.dumps(out, allow_nan=False)  # what report.json needs


def test_json_safe_frozen_and_strict() -> None:
    out = json_safe({"a": [1, {"b": 2.0}]}, frozen=True)
    assert isinstance(out, MappingProxyType) and isinstance(out["a"], tuple) and isinstance(out["a"][1], MappingProxyType)
    assert json_safe({"a": object()})["a"] is not None  # passed through when not strict
    with pytest.raises(NotJSONError, match=r"'run\.a\[1\]' has type object"):
        json_safe({"a": [1, object()]}, strict=True, where="run")


@pytest.mark.parametrize("v", [None, float("nan"), np.float32("nan"), "", "   ", pd.NA, "NA", "null", " None "])
def test_is_missing(v) -> None:
    assert is_missing(v)


@pytest.mark.parametrize("v", [0, 0.0, "x", "female", False])
def test_is_not_missing(v) -> None:
    assert not is_missing(v)


def test_words_are_labels_when_no_tokens_are_given() -> None:
    assert is_missing("NA") and not is_missing("NA", tokens=())
    assert is_missing(" ", tokens=()) and is_missing(None, tokens=())
