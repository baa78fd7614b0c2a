"""Findings wording on constructed cases with known answers."""

from __future__ import annotations

import pytest
from test_report_data import full_report, no_fairness_report

from faceaudit.report import compute_findings, render_findings
from faceaudit.report.charts import fmt_rate
from faceaudit.report.findings import MODERATE, STRONG, above_null, strength


def _entry(mi, lo, hi, null, norm, **kw):
    return {"mi": mi, "ci_low": lo, "ci_high": hi, "null_mi": null, "normalized": norm, **kw}


@pytest.mark.parametrize(
    ("entry", "word"),
    [
        (_entry(0.41, 0.37, 0.45, 0.01, 0.59), "strongly"),
        (_entry(0.41, 0.37, 0.45, 0.01, STRONG), "strongly"),
        (_entry(0.2, 0.15, 0.25, 0.01, STRONG - 1e-9), "moderately"),
        (_entry(0.1, 0.08, 0.12, 0.01, MODERATE), "moderately"),
        (_entry(0.03, 0.02, 0.04, 0.01, 0.05), "weakly"),
        # a large normalised score does not help when the CI does not clear the null
        (_entry(0.5, 0.005, 0.9, 0.01, 0.7), "barely"),
        # the null's own upper bound counts when present
        (_entry(0.3, 0.2, 0.4, 0.01, 0.5, null_ci_high=0.25), "barely"),
        (_entry(None, None, None, 0.01, None), "barely"),
        # a biased estimator's negative null does not make zero information "above the null"
        (_entry(0.0, 0.0, 0.05, -0.97, 0.0), "barely"),
        (_entry(0.1, 0.02, 0.2, -0.5, 0.2), "moderately"),
    ],
)
def test_strength_words(entry, word) -> None:
    assert strength(entry) == word
    assert above_null(entry) == (word != "barely")


def test_final_layer_sentence_orders_attributes_by_strength() -> None:
    texts = [f.text for f in compute_findings(full_report())]
    final = next(t for t in texts if t.startswith("The final layer"))
    assert final == (
        "The final layer (embedding) encodes sex strongly: 0.41 nats, 60% of the attribute's entropy; "
        "race moderately (0.26 nats, 18% of the attribute's entropy); yaw barely."
    )


def test_disparity_outside_band_with_separated_cis_is_high_and_first() -> None:
    found = compute_findings(full_report())
    assert found[0].severity == "high"
    assert found[0].text == (
        "FNMR for female is 2.3× that of male (0.0460 vs 0.0200) at FMR 1e-3, outside the tolerance band (tolerance 1.25×)."
    )
    sev = [f.severity for f in found]
    assert sev == sorted(sev, key=["high", "medium", "low", "info"].index)


def test_overlapping_cis_lower_the_severity_and_say_so() -> None:
    d = full_report()
    for g in d["fairness"][0]["groups"]:
        g["fnmr_ci"] = [0.0, 0.2]
    f = next(x for x in compute_findings(d) if x.text.startswith("FNMR for female"))
    assert f.severity == "medium"
    assert "may be noise" in f.text


def test_within_band_and_tolerance_from_settings() -> None:
    d = full_report()
    d["settings"]["tolerance_ratio"] = 3.0
    texts = [f.text for f in compute_findings(d)]
    assert not any("outside the tolerance band" in t for t in texts)
    assert any(t.startswith("For sex, FNMR (max ratio 2.30×) and FMR (max ratio 1.22×) stay within") for t in texts)


def test_peak_before_final_layer_is_reported() -> None:
    d = full_report()
    for e in d["expressivity"]:
        if e["attribute"] == "race" and e["layer"] == "stage4.block2":
            e.update(mi=0.6, ci_low=0.55, ci_high=0.65, normalized=0.42)
    texts = [f.text for f in compute_findings(d)]
    assert any(t.startswith("race is most expressed at layer stage4.block2 (0.60 nats") for t in texts)


def test_skipped_fairness_is_explained() -> None:
    texts = [f.text for f in compute_findings(no_fairness_report())]
    assert "Verification fairness was not measured: the manifest has no identity column" in texts[-1] or any(
        t.startswith("Verification fairness was not measured") for t in texts
    )
    assert not any("FNMR" in t for t in texts)


def test_render_findings_lines() -> None:
    lines = render_findings(full_report())
    assert lines[0] == "HIGH: FNMR for female is 2.3× that of male (0.0460 vs 0.0200) at FMR 1e-3, outside the tolerance band (tolerance 1.25×)."
    assert all(line.split(":")[0] in {"HIGH", "MEDIUM", "LOW", "INFO"} for line in lines)


def _no_error_report() -> dict:
    """A real verification-fairness entry with no false match in any group and no genuine pairs."""
    import numpy as np

    from faceaudit.fairness import verification_fairness

    rng = np.random.default_rng(0)
    groups = np.where(rng.random(200) < 0.3, "female", "male").astype(object)
    r = verification_fairness(rng.normal(size=(200, 32)), np.arange(200), groups, target_fmr=1e-9,
                              attribute="sex", n_bootstrap=20)
    d = full_report()
    d["fairness"] = [r.to_dict()]
    return d


def test_all_zero_rates_give_no_disparity_finding_but_say_what_zero_bounds() -> None:
    d = _no_error_report()
    n = {g["group"]: g["n_impostor_pairs"] for g in d["fairness"][0]["groups"]}
    texts = [f.text for f in compute_findings(d) if f.topic == "fairness"]
    assert not any("that of" in t or "tolerance band" in t for t in texts), texts
    zero = next(t for t in texts if "no false matches were observed in any group" in t)
    assert "rule of three" in zero
    for g, k in n.items():
        assert f"{g} below {fmt_rate(3 / k)} ({k:,} pairs)" in zero
    assert any("FNMR could not be measured" in t and "one image" in t for t in texts)


def test_report_written_before_the_fix_still_gets_no_self_comparison() -> None:
    # the disparities block as it used to be written: worst = best = the same group, a ratio of two floors
    d = _no_error_report()
    d["fairness"][0]["disparities"]["fmr"].update(max_min_ratio=6.36, worst_group="female", best_group="female",
                                                  ratio_to_best={"female": 1.0, "male": 0.157})
    texts = [f.text for f in compute_findings(d)]
    assert not any("that of female" in t for t in texts)
    assert any("no false matches were observed in any group" in t for t in texts)


def test_ratio_against_a_zero_group_is_worst_over_the_best_groups_floor() -> None:
    # the best group has no false match in 50 pairs (floor 0.5/50 = 0.01), the worst 0.1% in 10,000 pairs:
    # a written ratio of 10 (the floor over the worst rate) is no evidence of a 10x gap
    d = full_report()
    f = d["fairness"][0]
    f["groups"][0].update(fmr=0.001, fmr_ci=[0.0005, 0.0015], n_impostor_pairs=10_000)
    f["groups"][1].update(fmr=0.0, fmr_ci=[0.0, 0.06], n_impostor_pairs=50)
    f["disparities"]["fmr"].update(max_min_ratio=10.0, worst_group="female", best_group="male")
    texts = [x.text for x in compute_findings(d)]
    assert not any(t.startswith("FMR for female is 10.0×") for t in texts), texts
    assert any("FMR (max ratio 1.00×)" in t for t in texts), texts
