"""The report's findings in plain words, computed from the result (no new statistics).

Wording rules (documented here and in the report's glossary):

* An expressivity estimate is **above the null** when its CI lower bound
  (``ci_low``) exceeds the top of the permutation-null baseline (``null_ci_high``
  when the entry carries it, else ``null_mi``) and zero (a biased estimator
  can give a negative null). Estimates not above the null are
  described as **barely** encoded, whatever their point value.
* Above the null, the normalised score (``normalized``: share of the
  attribute's entropy for categorical attributes, the estimator's 0..1 score for
  continuous ones) sets the word: **strongly** >= `STRONG` (0.40),
  **moderately** >= `MODERATE` (0.15), otherwise **weakly**.
* A verification-rate disparity is **outside the tolerance band** when the
  worst group's rate exceeds the best group's by more than the tolerance ratio
  (`DEFAULT_TOLERANCE_RATIO` = 1.25, i.e. the four-fifths rule, unless the
  fairness entry's ``settings.tolerance_ratio`` or the report's
  ``settings.tolerance_ratio`` says otherwise). It is a **high** alert when the
  two groups' 95% CIs do not overlap, **medium** when they do (the gap may be
  noise).
* Worst and best are always two different groups. When every group's rate
  is zero there is **no** disparity finding: the report says that no errors
  were observed and what that bounds, each group's rate below ``3 / n_pairs``
  at 95% confidence (the rule of three).

Severities, most severe first: high, medium, low, info.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faceaudit import stats
from faceaudit.report.charts import fmt_num, fmt_rate, fmt_sci
from faceaudit.report.schema import AuditResult, as_result
from faceaudit.spec_check import check_message

STRONG = 0.40
"""Normalised score at or above which an attribute is 'strongly' encoded (if above the null)."""

MODERATE = 0.15
"""Normalised score at or above which an attribute is 'moderately' encoded (if above the null)."""

DEFAULT_TOLERANCE_RATIO = 1.25
"""Worst/best group error-rate ratio tolerated before a disparity is flagged."""

SMALL_GROUP_IDENTITIES = 20
"""Fewer identities than this in a group makes its rates too uncertain to read alone."""

SEVERITIES = ("high", "medium", "low", "info")


@dataclass(frozen=True)
class Finding:
    """One sentence of the findings: its severity, topic and text."""

    severity: str
    topic: str
    text: str

    def to_dict(self) -> dict[str, str]:
        """JSON-safe dict."""
        return {"severity": self.severity, "topic": self.topic, "text": self.text}


def null_top(entry: Mapping[str, Any]) -> float | None:
    """Top of the permutation-null baseline for one expressivity entry (nats)."""
    for key in ("null_ci_high", "null_high"):
        if entry.get(key) is not None:
            return float(entry[key])
    ci = entry.get("null_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and ci[1] is not None:
        return float(ci[1])
    v = entry.get("null_mi")
    return None if v is None else float(v)


def above_null(entry: Mapping[str, Any]) -> bool:
    """True when the CI lower bound clears the null baseline (see the module's wording rules)."""
    lo, top = entry.get("ci_low"), null_top(entry)
    if lo is None:
        return False
    # A biased estimator can give a negative null; zero information is never "above" it.
    return float(lo) > max(top if top is not None else 0.0, 0.0)


def strength(entry: Mapping[str, Any]) -> str:
    """'strongly', 'moderately', 'weakly' or 'barely' for one expressivity entry."""
    if not above_null(entry):
        return "barely"
    norm = entry.get("normalized")
    if norm is None:
        return "weakly"
    if norm >= STRONG:
        return "strongly"
    if norm >= MODERATE:
        return "moderately"
    return "weakly"


def _amount(entry: Mapping[str, Any]) -> str:
    mi = entry.get("mi")
    parts = [f"{fmt_num(mi, 2)} nats"]
    h = entry.get("entropy_y")
    if entry.get("kind") == "categorical" and h and mi is not None and h > 0:
        parts.append(f"{round(100 * mi / h):d}% of the attribute's entropy")
    elif entry.get("normalized") is not None:
        parts.append(f"normalised score {fmt_num(entry['normalized'], 2)}")
    return ", ".join(parts)


def _layer_order(result: AuditResult) -> list[str]:
    names = [layer.name for layer in sorted(result.layers, key=lambda x: x.depth)]
    for e in result.expressivity:
        if e["layer"] not in names:
            names.append(e["layer"])
    return names


_RANK = {"strongly": 0, "moderately": 1, "weakly": 2, "barely": 3}


def _expressivity_findings(result: AuditResult) -> list[Finding]:
    out: list[Finding] = []
    if not result.expressivity:
        return out
    order = _layer_order(result)
    by_layer: dict[str, list[Mapping[str, Any]]] = {}
    for e in result.expressivity:
        by_layer.setdefault(e["layer"], []).append(e)
    final = next(name for name in reversed(order) if name in by_layer)
    entries = sorted(by_layer[final], key=lambda e: (_RANK[strength(e)], -(e.get("normalized") or 0.0)))
    clauses = []
    for k, e in enumerate(entries):
        word = strength(e)
        if word == "barely":
            clause = f"{e['attribute']} barely"
        else:
            clause = f"{e['attribute']} {word}" + (f": {_amount(e)}" if k == 0 else f" ({_amount(e)})")
        clauses.append(clause)
    top = strength(entries[0])
    sev = {"strongly": "medium", "moderately": "low"}.get(top, "info")
    out.append(Finding(sev, "expressivity", f"The final layer ({final}) encodes " + "; ".join(clauses) + "."))

    # Where each attribute peaks, when that is not the final layer.
    attrs: dict[str, list[Mapping[str, Any]]] = {}
    for e in result.expressivity:
        attrs.setdefault(e["attribute"], []).append(e)
    for attr, es in attrs.items():
        es = [e for e in es if e.get("mi") is not None]
        if not es:
            continue
        peak = max(es, key=lambda e: (e["mi"], -order.index(e["layer"])))
        fin = next((e for e in es if e["layer"] == final), None)
        if peak["layer"] != final and above_null(peak) and fin is not None and fin["mi"] is not None:
            if peak.get("ci_low") is not None and fin.get("ci_high") is not None and peak["ci_low"] > fin["ci_high"]:
                out.append(
                    Finding(
                        "info",
                        "expressivity",
                        f"{attr} is most expressed at layer {peak['layer']} ({_amount(peak)}), "
                        f"more than at the final layer ({fmt_num(fin['mi'], 2)} nats): the network discards part of it.",
                    )
                )
    n_warn = sum(1 for e in result.expressivity if e.get("warnings"))
    if n_warn:
        out.append(
            Finding(
                "low",
                "estimation",
                f"{n_warn} of {len(result.expressivity)} expressivity estimates carry warnings; read them before "
                "relying on those numbers (see Warnings).",
            )
        )
    return out


def tolerance_ratio(result: AuditResult, f: Mapping[str, Any]) -> float:
    """The worst/best ratio tolerated for fairness entry `f`: its own setting, else the report's, else the default."""
    for src in (f.get("settings") or {}, result.settings):
        v = src.get("tolerance_ratio")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1:
            return float(v)
    return DEFAULT_TOLERANCE_RATIO


def group_rows(f: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Per-group rows of a fairness entry, by group label."""
    return {str(g["group"]): g for g in f.get("groups") or ()}


def _pairs_key(metric: str) -> str:
    return "n_impostor_pairs" if metric == "fmr" else "n_genuine_pairs"


def disparity(f: Mapping[str, Any], metric: str) -> dict[str, Any] | None:
    """Worst/best group, their rates and ratio for `metric` ('fmr' or 'fnmr'), from the entry's own rates.

    The groups compared are the entry's ``groups_used`` (the fairness room's small-group rule); the ranking
    and the floored ratio come from :func:`faceaudit.stats.disparity`, and the entry's own ratio is kept
    where its worst and best groups agree with the rates.

    None when fewer than two groups have the rate. Worst and best are different groups by construction:
    when every compared rate is the same there is none (``worst`` and ``best`` None, ratio 1), and when
    every rate is zero ``no_errors`` is True and there is no ratio at all, so no disparity finding can
    rest on zero rates (whatever a report written by an older version says).
    """
    rows = group_rows(f)
    d = ((f.get("disparities") or {}).get(metric)) or {}
    used = [str(g) for g in d.get("groups_used") or () if str(g) in rows]
    vals = {g: rows[g][metric] for g in (used if len(used) >= 2 else rows) if rows[g].get(metric) is not None}
    if len(vals) < 2:
        return None
    hi, lo = max(vals.values()), min(vals.values())
    base = {"groups": list(vals), "worst_value": hi, "best_value": lo, "separated": False, "no_errors": hi == 0}
    n_pairs = {g: rows[g].get(_pairs_key(metric)) for g in vals}
    n_pairs = {g: n if isinstance(n, int) and n > 0 else 0 for g, n in n_pairs.items()}
    computed = stats.disparity(vals, n_pairs)  # recomputed from the rates: one rule for every report
    if computed["no_errors_observed"]:
        return {**base, "worst": None, "best": None, "ratio": None}
    if computed["worst_group"] is None:  # every compared rate is the same
        return {**base, "worst": None, "best": None, "ratio": 1.0}
    worst, best = d.get("worst_group"), d.get("best_group")
    ratio = d.get("max_min_ratio")  # the entry's own ratio, when its worst and best are these rates' groups
    if worst is None or best is None or vals.get(str(worst)) != hi or vals.get(str(best)) != lo:
        worst, best, ratio = computed["worst_group"], computed["best_group"], None
    if ratio is None:  # an entry that states no ratio: the raw one
        ratio = hi / lo if lo > 0 else math.inf
    elif lo == 0 and n_pairs[str(best)] > 0:
        ratio = computed["max_min_ratio"]  # worst over the best group's floor (0.5 / n_pairs)
    w, b = rows[str(worst)], rows[str(best)]
    wci, bci = w.get(f"{metric}_ci"), b.get(f"{metric}_ci")
    separated = bool(
        isinstance(wci, (list, tuple))
        and isinstance(bci, (list, tuple))
        and wci[0] is not None
        and bci[1] is not None
        and wci[0] > bci[1]
    )
    return {**base, "worst": str(worst), "best": str(best), "ratio": ratio, "separated": separated}


def _no_error_finding(f: Mapping[str, Any], metric: str, d: Mapping[str, Any], at: str) -> Finding:
    """What zero errors in every group says: no group is worse, and each rate is below 3/n (rule of three)."""
    rows = group_rows(f)
    errors = "false matches" if metric == "fmr" else "false non-matches"
    bounds = []
    for g in d["groups"]:
        n = rows[g].get(_pairs_key(metric))
        if isinstance(n, int) and n > 0:
            bounds.append(f"{g} below {fmt_rate(3 / n)} ({n:,} pairs)")
    text = (
        f"For {f['attribute']}, no {errors} were observed in any group {at} ({metric.upper()} 0 in each), "
        "so no group can be called worse than another"
    )
    if bounds:
        text += (
            "; zero errors in n pairs only bound the rate below 3/n at 95% confidence (rule of three): "
            + ", ".join(bounds)
        )
    return Finding("info", "fairness", text + ".")


def _missing_fnmr_finding(f: Mapping[str, Any]) -> Finding | None:
    """Why FNMR is missing: groups without genuine pairs (no person with two images in the group)."""
    groups = list(f.get("groups") or ())
    missing = [str(g["group"]) for g in groups if g.get("fnmr") is None]
    if not missing:
        return None
    why = "no identity has two images in the same group (for example one image per identity), and FNMR needs genuine pairs"
    if len(missing) == len(groups):
        text = f"For {f['attribute']}, FNMR could not be measured: {why}."
    else:
        text = f"For {f['attribute']}, FNMR could not be measured for group(s) {', '.join(missing)}: {why}."
    return Finding("low", "fairness", text)


def _fairness_findings(result: AuditResult) -> list[Finding]:
    out: list[Finding] = []
    if result.fairness is None:
        reason = result.fairness_skipped_reason or "no reason recorded"
        out.append(Finding("info", "fairness", f"Verification fairness was not measured: {reason}"))
        return out
    for f in result.fairness:
        tol = tolerance_ratio(result, f)
        attr = f["attribute"]
        at = f"at FMR {fmt_sci(f['target_fmr'])}"
        within = []
        for metric in ("fnmr", "fmr"):
            d = disparity(f, metric)
            if d is None:
                continue
            if d["no_errors"]:
                out.append(_no_error_finding(f, metric, d, at))
                continue
            name = metric.upper()
            if d["ratio"] <= tol:
                within.append((name, d["ratio"]))
                continue
            if math.isinf(d["ratio"]):
                size = f"{fmt_rate(d['worst_value'])} while {d['best']} has none observed"
            else:
                size = (
                    f"{d['ratio']:.1f}× that of {d['best']} "
                    f"({fmt_rate(d['worst_value'])} vs {fmt_rate(d['best_value'])})"
                )
            sev = "high" if d["separated"] else "medium"
            tail = (
                "outside the tolerance band"
                + ("" if d["separated"] else "; the confidence intervals overlap, so the gap may be noise")
                + f" (tolerance {tol:g}×)."
            )
            out.append(Finding(sev, "fairness", f"{name} for {d['worst']} is {size} {at}, {tail}"))
        if within:
            desc = " and ".join(f"{n} (max ratio {r:.2f}×)" for n, r in within)
            verb = "stay" if len(within) > 1 else "stays"
            out.append(Finding("info", "fairness", f"For {attr}, {desc} {verb} within the tolerance band {at} (tolerance {tol:g}×)."))
        missing = _missing_fnmr_finding(f)
        if missing is not None:
            out.append(missing)
        small = [
            str(g["group"])
            for g in f["groups"]
            if g.get("small") or (g.get("n_identities") is not None and g["n_identities"] < SMALL_GROUP_IDENTITIES)
        ]
        if small:
            out.append(
                Finding(
                    "low",
                    "fairness",
                    f"For {attr}, group(s) {', '.join(small)} have few identities; their rates are uncertain "
                    "(wide confidence intervals).",
                )
            )
    return out


def _data_findings(result: AuditResult) -> list[Finding]:
    d = result.data
    out = []
    if d.n_failed:
        share = d.n_failed / d.n_images if d.n_images else 0.0
        sev = "medium" if share > 0.05 else "low"
        out.append(
            Finding(sev, "data", f"{d.n_failed} of {d.n_images} images ({100 * share:.1f}%) could not be used (see Run metadata).")
        )
    if result.warnings:
        out.append(Finding("low", "run", f"The run recorded {len(result.warnings)} warning(s) (see Warnings)."))
    return out


def input_findings(check: Any, label: str | None = None) -> list[Finding]:
    """HIGH when another channel order or normalisation separates faces clearly better (see spec_check);
    INFO when the spec could not be checked. `label` names the model in a trend or comparison."""
    if not isinstance(check, Mapping):
        return []
    msg = check_message(check, label)
    if msg:
        return [Finding("high", "input", msg)]
    if check.get("status") == "not_checked" and check.get("reason"):
        whose = f" of {label}" if label else ""
        return [Finding("info", "input", f"Input spec{whose} not checked: {check['reason']}")]
    return []


def describe_input(spec: Any) -> str:
    """'112x112 NCHW RGB, mean 127.5, std 127.5 (sidecar)' for a report's `input` entry; '–' when absent."""
    if not isinstance(spec, Mapping) or not spec:
        return "–"

    def value(v: Any) -> str:
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        return fmt_num(vals[0], 4) if len(set(vals)) == 1 else ",".join(fmt_num(x, 4) for x in vals)

    text = (f"{spec.get('height')}x{spec.get('width')} {spec.get('layout')} {spec.get('channel_order')}, "
            f"mean {value(spec.get('mean'))}, std {value(spec.get('std'))}")
    return text + (f" ({spec['source']})" if spec.get("source") else "")


def _input_findings(result: AuditResult) -> list[Finding]:
    return input_findings(result.extra.get("input_check"))


def compute_findings(report: AuditResult | Mapping[str, Any]) -> list[Finding]:
    """Findings and alerts in plain words, sorted by severity (high first), stable within a severity.

    They come first in the HTML report so a reader sees what matters before
    the charts; each sentence is computed only from numbers already in the
    result, following the wording rules in this module's docstring.
    """
    result = as_result(report)
    items = (_input_findings(result) + _fairness_findings(result) + _expressivity_findings(result)
             + _data_findings(result))
    return sorted(items, key=lambda x: SEVERITIES.index(x.severity))


def render_findings(report: AuditResult | Mapping[str, Any]) -> list[str]:
    """The findings as one-line strings ("HIGH: ..."), most severe first, for a terminal summary."""
    return [f"{f.severity.upper()}: {f.text}" for f in compute_findings(report)]


def strength_words() -> Sequence[tuple[str, str]]:
    """The wording rules as (word, rule) pairs, for the glossary."""
    return (
        ("strongly", f"CI lower bound above the null and normalised score ≥ {STRONG:g}"),
        ("moderately", f"CI lower bound above the null and normalised score ≥ {MODERATE:g}"),
        ("weakly", f"CI lower bound above the null and normalised score < {MODERATE:g}"),
        ("barely", "CI lower bound not above the null baseline"),
    )

__all__ = [
    "DEFAULT_TOLERANCE_RATIO",
    "Finding",
    "MODERATE",
    "SEVERITIES",
    "SMALL_GROUP_IDENTITIES",
    "STRONG",
    "above_null",
    "compute_findings",
    "describe_input",
    "disparity",
    "group_rows",
    "input_findings",
    "null_top",
    "render_findings",
    "strength",
    "strength_words",
    "tolerance_ratio",
]
