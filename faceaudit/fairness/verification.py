"""Verification fairness: error rates of 1:1 face verification per demographic group at one global threshold.

:func:`verification_fairness` runs in named phases: the labels (identities, groups), the global threshold,
the scored genuine and impostor pairs, the rates per group (fairlearn's MetricFrame), the identity
bootstrap, the small-group rules, the disparities and the summary measures. Its result reads like
fairlearn's ``MetricFrame``: ``.by_group``, ``.difference()``, ``.ratio()`` and ``.worst()``.
"""

from __future__ import annotations

import logging
import math
import re
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from faceaudit.data.attributes import is_missing
from faceaudit.errors import InputError
from faceaudit.fairness.metrics import fairness_discrepancy_rate, garbe, inequity_rate, threshold_at_fmr
from faceaudit.fairness.pairs import DEFAULT_CHUNK, genuine_pairs, impostor_pairs, l2_normalize, score_pairs
from faceaudit.jsonsafe import json_safe
from faceaudit.stats import comparable_groups, disparity

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METRICS", "GroupRates", "VerificationFairnessResult", "combine_groups", "intersect_groups",
           "verification_fairness"]  # fmt: skip

log = logging.getLogger(__name__)

#: The error rates measured per group: false match rate and false non-match rate.
METRICS = ("fmr", "fnmr")


def _missing(v: Any) -> bool:
    """Missing label in a Python array: None, NaN or blank (words such as "NA" are labels here)."""
    return is_missing(v, tokens=())


@dataclass(frozen=True)
class GroupRates:
    """Error rates of one group at the global threshold (rates None where the group has no such pairs)."""

    group: str
    n_identities: int
    n_images: int
    n_genuine_pairs: int
    n_impostor_pairs: int
    fmr: float | None
    fmr_ci: tuple[float | None, float | None]
    fnmr: float | None
    fnmr_ci: tuple[float | None, float | None]
    small: bool
    n_false_matches: int = 0
    n_false_non_matches: int = 0

    def n_pairs(self, metric: str) -> int:
        """The pairs a rate is measured on: impostor pairs for FMR, genuine pairs for FNMR."""
        return self.n_impostor_pairs if metric == "fmr" else self.n_genuine_pairs

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "group": self.group,
                "n_identities": self.n_identities,
                "n_images": self.n_images,
                "n_genuine_pairs": self.n_genuine_pairs,
                "n_impostor_pairs": self.n_impostor_pairs,
                "fmr": self.fmr,
                "fmr_ci": list(self.fmr_ci),
                "fnmr": self.fnmr,
                "fnmr_ci": list(self.fnmr_ci),
                "small": self.small,
                "n_false_matches": self.n_false_matches,
                "n_false_non_matches": self.n_false_non_matches,
            }
        )


@dataclass(frozen=True)
class VerificationFairnessResult:
    """Per-group FMR/FNMR at one global threshold, disparities, summary measures and a cross-group FMR matrix.

    Read it like fairlearn's ``MetricFrame``: :attr:`by_group` is the per-group table, and
    :meth:`difference`, :meth:`ratio` and :meth:`worst` give one value per metric (FMR, FNMR), computed
    among the groups not flagged ``small`` whenever at least two such groups remain (as ``disparities``).
    """

    attribute: str | None
    target_fmr: float
    threshold: float
    n_identities: int
    n_images: int
    n_genuine_pairs: int
    n_impostor_pairs: int
    groups: tuple[GroupRates, ...]
    disparities: dict[str, Any]
    summary: dict[str, Any]
    cross_group_fmr: dict[str, Any]
    warnings: tuple[str, ...]
    settings: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def group(self, name: str) -> GroupRates:
        """The rates of one group by label."""
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(f"no group {name!r}; groups are {[g.group for g in self.groups]}")

    @property
    def by_group(self) -> pd.DataFrame:
        """One row per group (index ``group``, in report order), as ``MetricFrame.by_group``: ``fmr``,
        ``fnmr`` and their CI bounds (NaN where a rate cannot be measured), pair and error counts, ``small``."""
        import pandas as pd

        rows = [
            {
                "fmr": g.fmr, "fnmr": g.fnmr,
                "fmr_ci_low": g.fmr_ci[0], "fmr_ci_high": g.fmr_ci[1],
                "fnmr_ci_low": g.fnmr_ci[0], "fnmr_ci_high": g.fnmr_ci[1],
                "n_identities": g.n_identities, "n_images": g.n_images,
                "n_genuine_pairs": g.n_genuine_pairs, "n_impostor_pairs": g.n_impostor_pairs,
                "n_false_matches": g.n_false_matches, "n_false_non_matches": g.n_false_non_matches,
                "small": g.small,
            }
            for g in self.groups
        ]  # fmt: skip
        rates = ["fmr", "fnmr", "fmr_ci_low", "fmr_ci_high", "fnmr_ci_low", "fnmr_ci_high"]
        frame = pd.DataFrame(rows, index=pd.Index([g.group for g in self.groups], name="group"),
                             columns=list(rows[0]) if rows else rates + ["small"])  # fmt: skip
        return frame.astype({c: float for c in rates}).astype({"small": bool})

    def _disparity(self, metric: str, include_small: bool) -> dict[str, Any]:
        """The disparity views of one metric (see :func:`faceaudit.stats.disparity`)."""
        rates = {g.group: getattr(g, metric) for g in self.groups if getattr(g, metric) is not None}
        if not include_small:
            rates = comparable_groups(rates, {g.group for g in self.groups if g.small})
        return disparity(rates, {g: self.group(g).n_pairs(metric) for g in rates})

    def _per_metric(self, key: str, include_small: bool, dtype: Any) -> pd.Series:
        import pandas as pd

        values = {m: self._disparity(m, include_small)[key] for m in METRICS}
        return pd.Series(values, dtype=dtype, name=key)

    def difference(self, *, include_small: bool = False) -> pd.Series:
        """Per metric (index ``fmr``, ``fnmr``): highest minus lowest group rate, raw rates, as
        ``MetricFrame.difference()``; NaN when fewer than two groups have the rate. Groups flagged small are
        left out while at least two others remain, unless ``include_small``."""
        return self._per_metric("difference", include_small, float)

    def ratio(self, *, include_small: bool = False) -> pd.Series:
        """Per metric: the worst group's rate over the best group's (at least 1; a zero rate counts as half an
        error, 0.5 / n_pairs), the report's ``max_min_ratio``. This is the reciprocal of
        ``MetricFrame.ratio()`` (min over max), so that 1.25 reads "25% more errors". NaN when no errors are
        observed in any compared group or fewer than two groups have the rate. Small groups as in
        :meth:`difference`."""
        return self._per_metric("max_min_ratio", include_small, float)

    def worst(self, *, include_small: bool = False) -> pd.Series:
        """Per metric: the group with the highest rate, None when every compared rate is the same (or no
        group has the rate). Small groups as in :meth:`difference`."""
        return self._per_metric("worst_group", include_small, object)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "attribute": self.attribute,
                "target_fmr": self.target_fmr,
                "threshold": self.threshold,
                "n_identities": self.n_identities,
                "n_images": self.n_images,
                "n_genuine_pairs": self.n_genuine_pairs,
                "n_impostor_pairs": self.n_impostor_pairs,
                "groups": [g.to_dict() for g in self.groups],
                "disparities": self.disparities,
                "summary": self.summary,
                "cross_group_fmr": self.cross_group_fmr,
                "warnings": list(self.warnings),
                "settings": self.settings,
                **self.extra,
            }
        )


def combine_groups(*group_arrays: Sequence[Any], sep: str = " & ") -> np.ndarray:
    """Intersectional groups (e.g. sex x age band): join labels per row; None where any part is missing."""
    if not group_arrays:
        raise InputError("combine_groups needs at least one group array")
    arrays = [np.asarray(getattr(g, "groups", g), dtype=object) for g in group_arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise InputError(f"combine_groups: arrays differ in length {[len(a) for a in arrays]}")
    out = np.empty(n, dtype=object)
    for r in range(n):
        parts = [a[r] for a in arrays]
        out[r] = None if any(_missing(p) for p in parts) else sep.join(str(p) for p in parts)
    return out


#: Alias of :func:`combine_groups`.
intersect_groups = combine_groups


def _label_key(label: str) -> tuple[float, str]:
    """Order labels by a leading number when they have one ("5-9" before "10-14"), then as text."""
    m = re.match(r"\s*([<>=]*)\s*(-?\d+(?:\.\d+)?)", label)
    if not m:
        return (math.inf, label)
    v = float(m.group(2))
    return (v - 0.5 if m.group(1).startswith("<") else v, label)


def _ci(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return (None, None)
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))
def _metric_frame_rates(
    y_true: np.ndarray, y_pred: np.ndarray, sf: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-group FMR (false positive rate) and FNMR (false negative rate) through fairlearn's MetricFrame."""
    from fairlearn.metrics import MetricFrame, false_negative_rate, false_positive_rate

    # Identical (group, truth, decision) rows are collapsed into one row with a count as sample weight:
    # the rates are the same, and MetricFrame then handles a few rows instead of millions of pairs.
    codes, inv = np.unique(np.asarray(sf, dtype=str), return_inverse=True)
    key = (inv.astype(np.int64) * 2 + y_true) * 2 + y_pred
    uk, cnt = np.unique(key, return_counts=True)
    yp, rest = uk % 2, uk // 2
    yt, gi = rest % 2, rest // 2
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        mf = MetricFrame(
            metrics={"fmr": false_positive_rate, "fnmr": false_negative_rate},
            y_true=yt,
            y_pred=yp,
            sensitive_features=codes[gi],
            sample_params={"fmr": {"sample_weight": cnt}, "fnmr": {"sample_weight": cnt}},
        )
    bg = mf.by_group
    return {str(k): float(v) for k, v in bg["fmr"].items()}, {str(k): float(v) for k, v in bg["fnmr"].items()}




# --------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class _Labels:
    """Per image: identity code (-1: missing) and group code (-1: no group or no identity); the group order."""

    ident: np.ndarray
    id_ok: np.ndarray
    n_identities: int
    order: list[str]
    gcode: np.ndarray
    n_missing_group: int

    def members(self) -> list[np.ndarray]:
        """The images of each group, in group order."""
        return [np.flatnonzero(self.gcode == k) for k in range(len(self.order))]


def _prepare_labels(ids_raw: np.ndarray, grp_raw: np.ndarray, group_order: Sequence[str] | None,
                    warns: list[str]) -> _Labels:
    """Phase 1: identity and group codes; images without an identity or a group are left out, with a warning."""
    id_ok = np.array([not _missing(v) for v in ids_raw])
    if not id_ok.all():
        warns.append(f"{int((~id_ok).sum())} image(s) without identity were left out")
    _, ident = np.unique(np.where(id_ok, ids_raw, "").astype(str), return_inverse=True)
    ident = np.where(id_ok, ident, -1).astype(np.int64)
    n_id_total = int(len(np.unique(ident[id_ok])))
    if n_id_total < 2:
        raise InputError(f"verification fairness needs at least two identities, got {n_id_total}")

    g_ok = id_ok & np.array([not _missing(v) for v in grp_raw])
    labels_present = sorted({str(v) for v in grp_raw[g_ok]}, key=_label_key)
    if group_order:
        order = [str(g) for g in group_order if str(g) in labels_present]
        order += [g for g in labels_present if g not in order]
    else:
        order = labels_present
    if not order:
        raise InputError("every image's group is missing; give a group label per image")
    code_of = {g: k for k, g in enumerate(order)}
    gcode = np.array([code_of[str(v)] if ok else -1 for v, ok in zip(grp_raw, g_ok)], dtype=np.int64)
    n_missing_group = int((id_ok & ~g_ok).sum())
    if n_missing_group:
        warns.append(f"{n_missing_group} image(s) with a missing group were left out of the group rates")
    return _Labels(ident, id_ok, n_id_total, order, gcode, n_missing_group)


def _global_threshold(emb: np.ndarray, labels: _Labels, threshold: float | None, threshold_pairs: int,
                      target_fmr: float, rng: np.random.Generator, chunk_size: int) -> tuple[float, float | None, int]:
    """Phase 2: ONE threshold at ``target_fmr`` on impostor pairs over all images with an identity (or the one
    given). Returns (threshold, FMR realised on those pairs or None, number of pairs used)."""
    all_members = np.flatnonzero(labels.id_ok)
    ti, tj, t_total = impostor_pairs(all_members, all_members, labels.ident, threshold_pairs, rng, same=True)
    if threshold is None:
        t_scores = score_pairs(emb, ti, tj, chunk_size=chunk_size, normalized=True)
        thr = threshold_at_fmr(t_scores, target_fmr)
        return thr, float((t_scores >= thr).mean()), int(min(threshold_pairs, t_total))
    return float(threshold), None, int(min(threshold_pairs, t_total))


@dataclass(frozen=True)
class _Pairs:
    """Scored same-group pairs at the threshold, and the cross-group FMR cells.

    Genuine pairs (gi, gj) of group gg with ``g_err`` = false non-match; same-group impostor pairs (ii, ij)
    of group ig with ``ie`` = false match; ``cell_*`` are G x G lists over group pairs (a, b).
    """

    gi: np.ndarray
    gj: np.ndarray
    gg: np.ndarray
    g_err: np.ndarray
    gen_total: list[int]
    ii: np.ndarray
    ij: np.ndarray
    ig: np.ndarray
    ie: np.ndarray
    cell_fmr: list[list[float | None]]
    cell_n: list[list[int]]
    cell_total: list[list[int]]
    n_impostor: int

    def n_genuine_by_group(self, n_groups: int) -> np.ndarray:
        return np.bincount(self.gg, minlength=n_groups)

    def n_impostor_by_group(self, n_groups: int) -> np.ndarray:
        return np.bincount(self.ig, minlength=n_groups)


def _score_pairs(emb: np.ndarray, labels: _Labels, members: list[np.ndarray], thr: float, *,
                 max_genuine_pairs: int, per_identity: int | None, max_impostor_pairs: int,
                 rng: np.random.Generator, chunk_size: int) -> _Pairs:
    """Phase 3: genuine pairs within each group, impostor pairs within and between groups, scored at ``thr``."""
    G = len(members)
    gen_i, gen_j, gen_g, gen_total = [], [], [], []
    for k in range(G):
        i, j, tot = genuine_pairs(members[k], labels.ident, max_genuine_pairs, rng, per_identity=per_identity)
        gen_i.append(i), gen_j.append(j), gen_g.append(np.full(len(i), k)), gen_total.append(tot)
    gi, gj, gg = np.concatenate(gen_i), np.concatenate(gen_j), np.concatenate(gen_g)
    g_scores = score_pairs(emb, gi, gj, chunk_size=chunk_size, normalized=True)

    cell_fmr: list[list[float | None]] = [[None] * G for _ in range(G)]
    cell_n = [[0] * G for _ in range(G)]
    cell_total = [[0] * G for _ in range(G)]
    diag_i, diag_j, diag_g, diag_err = [], [], [], []
    n_imp = 0
    for a in range(G):
        for b in range(a, G):
            i, j, tot = impostor_pairs(members[a], members[b], labels.ident, max_impostor_pairs, rng, same=(a == b))
            err = score_pairs(emb, i, j, chunk_size=chunk_size, normalized=True) >= thr
            n_imp += len(i)
            cell_n[a][b] = cell_n[b][a] = int(len(i))
            cell_total[a][b] = cell_total[b][a] = tot
            if len(i):
                cell_fmr[a][b] = cell_fmr[b][a] = float(err.mean())
            if a == b:
                diag_i.append(i), diag_j.append(j), diag_g.append(np.full(len(i), a)), diag_err.append(err)
    ii, ij, ig, ie = (np.concatenate(x) for x in (diag_i, diag_j, diag_g, diag_err))
    return _Pairs(gi, gj, gg, g_scores < thr, gen_total, ii, ij, ig, ie, cell_fmr, cell_n, cell_total, n_imp)


def _rates_by_group(pairs: _Pairs, order: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Phase 4: per-group FMR and FNMR through fairlearn's MetricFrame (genuine = positive class, match =
    positive prediction)."""
    labels_arr = np.asarray(order, dtype=object)
    y_true = np.r_[np.ones(len(pairs.gg), dtype=int), np.zeros(len(pairs.ig), dtype=int)]
    y_pred = np.r_[(~pairs.g_err).astype(int), pairs.ie.astype(int)]
    if not len(y_true):
        return {}, {}
    return _metric_frame_rates(y_true, y_pred, labels_arr[np.r_[pairs.gg, pairs.ig]])


def _bootstrap_rates(labels: _Labels, pairs: _Pairs, n_groups: int, n_boot: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Phase 5: (FMR, FNMR) per resample and group, resampling IDENTITIES with replacement (pairs of the same
    person are not independent), at the fixed threshold. NaN where a resample has no pair of the group."""
    G = n_groups
    boot_fmr = np.full((n_boot, G), np.nan)
    boot_fnmr = np.full((n_boot, G), np.nan)
    ident = labels.ident
    n_ident_all = int(ident.max()) + 1
    gid = ident[pairs.gi]
    iid_a, iid_b = ident[pairs.ii], ident[pairs.ij]
    ge, ie_f = pairs.g_err.astype(float), pairs.ie.astype(float)
    id_codes = np.unique(ident[labels.id_ok])
    for bt in range(n_boot):
        w = np.bincount(rng.choice(id_codes, size=labels.n_identities, replace=True), minlength=n_ident_all)
        w = w.astype(float)
        wg = w[gid]
        wi = w[iid_a] * w[iid_b]
        den_g = np.bincount(pairs.gg, weights=wg, minlength=G)
        num_g = np.bincount(pairs.gg, weights=wg * ge, minlength=G)
        den_i = np.bincount(pairs.ig, weights=wi, minlength=G)
        num_i = np.bincount(pairs.ig, weights=wi * ie_f, minlength=G)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_fnmr[bt] = np.where(den_g > 0, num_g / den_g, np.nan)
            boot_fmr[bt] = np.where(den_i > 0, num_i / den_i, np.nan)
    return boot_fmr, boot_fnmr


@dataclass(frozen=True)
class _SmallGroupRule:
    """Below any of these a group is flagged ``small`` (rule of three for impostor pairs: 3 / target_fmr)."""

    min_identities: int
    min_genuine_pairs: int
    min_impostor_pairs: int

    def reasons(self, n_ids: int, n_gen: int, n_imp: int) -> list[str]:
        out = []
        if n_ids < self.min_identities:
            out.append(f"{n_ids} identities (< {self.min_identities})")
        if n_gen < self.min_genuine_pairs:
            out.append(f"{n_gen} genuine pairs (< {self.min_genuine_pairs})")
        if n_imp < self.min_impostor_pairs:
            out.append(f"{n_imp} impostor pairs (< 3/target_fmr = {self.min_impostor_pairs})")
        return out


def _group_rows(labels: _Labels, members: list[np.ndarray], pairs: _Pairs, rates: tuple[dict, dict],
                boot: tuple[np.ndarray, np.ndarray], rule: _SmallGroupRule, ci_level: float,
                warns: list[str]) -> list[GroupRates]:
    """Phase 6: each group's rates with bootstrap CIs, flagged ``small`` by the small-group rule (warned),
    and a warning when one identity supplies over a quarter of a group's genuine pairs."""
    fmr_mf, fnmr_mf = rates
    boot_fmr, boot_fnmr = boot
    n_gen_g = pairs.n_genuine_by_group(len(members))
    n_imp_g = pairs.n_impostor_by_group(len(members))
    rows = []
    for k, g in enumerate(labels.order):
        m = members[k]
        n_ids_k = int(len(np.unique(labels.ident[m])))
        fmr = fmr_mf.get(g) if n_imp_g[k] > 0 else None
        fnmr = fnmr_mf.get(g) if n_gen_g[k] > 0 else None
        reasons = rule.reasons(n_ids_k, int(n_gen_g[k]), int(n_imp_g[k]))
        if reasons:
            warns.append(f"group {g!r} is small ({', '.join(reasons)}): its rates are too uncertain to compare")
        if n_gen_g[k] > 0:
            share = np.bincount(labels.ident[pairs.gi[pairs.gg == k]]).max() / n_gen_g[k]
            if share > 0.25 and n_ids_k > 2:
                warns.append(
                    f"group {g!r}: one identity supplies {share:.0%} of its genuine pairs, so its FNMR mostly "
                    "reflects that person; set max_genuine_pairs_per_identity to balance"
                )
        rows.append(
            GroupRates(
                group=g,
                n_identities=n_ids_k,
                n_images=int(len(m)),
                n_genuine_pairs=int(n_gen_g[k]),
                n_impostor_pairs=int(n_imp_g[k]),
                fmr=fmr,
                fmr_ci=_ci(boot_fmr[:, k], ci_level) if fmr is not None else (None, None),
                fnmr=fnmr,
                fnmr_ci=_ci(boot_fnmr[:, k], ci_level) if fnmr is not None else (None, None),
                small=bool(reasons),
                n_false_matches=int(pairs.ie[pairs.ig == k].sum()),
                n_false_non_matches=int(pairs.g_err[pairs.gg == k].sum()),
            )
        )
    return rows


def _rates(rows: Sequence[GroupRates], metric: str) -> dict[str, float]:
    return {r.group: getattr(r, metric) for r in rows if getattr(r, metric) is not None}


def _disparities(rows: Sequence[GroupRates], warns: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Phase 7: worst/best views per metric among the comparable groups (small groups left out while at least
    two others remain, see :func:`faceaudit.stats.comparable_groups`), with warnings for what was left out
    and for zero rates. Returns the disparities and the rates each metric compared."""
    small = {r.group for r in rows if r.small}
    disp: dict[str, Any] = {}
    used_by: dict[str, dict[str, float]] = {}
    for kind in METRICS:
        rates = _rates(rows, kind)
        used = used_by[kind] = comparable_groups(rates, small)
        d = disp[kind] = disparity(used, {r.group: r.n_pairs(kind) for r in rows if r.group in rates})
        d["groups_used"] = list(used)
        left_out = [g for g in rates if g not in used]
        if left_out:
            warns.append(f"{kind.upper()} disparities and summaries leave out small group(s) {', '.join(map(repr, left_out))}")
        elif any(g in small for g in used) and len(used) > 1:
            warns.append(f"{kind.upper()} disparities include small groups (fewer than two large groups exist)")
        errors = "false matches" if kind == "fmr" else "false non-matches"
        if d.get("no_errors_observed") and len(used) > 1:
            bounds = ", ".join(f"{g!r} < {b:.2g}" for g, b in d["upper_limit_95"].items())
            warns.append(
                f"no {errors} in any group: {kind.upper()} disparities are undefined; zero errors in n pairs "
                f"bound each group's {kind.upper()} below 3/n at 95% (rule of three): {bounds}"
            )
        elif d.get("zero_rate_groups") and len(d["ratio_to_best"]) > 1:
            warns.append(
                f"{kind.upper()} is zero for {', '.join(map(repr, d['zero_rate_groups']))}: ratios use 0.5/n_pairs in its place"
            )
    no_genuine = [r.group for r in rows if r.n_genuine_pairs == 0]
    if no_genuine:
        where = "any group" if len(no_genuine) == len(rows) else f"group(s) {', '.join(map(repr, no_genuine))}"
        warns.append(
            f"FNMR cannot be measured for {where}: no genuine pairs (no identity has two images there: "
            "FNMR needs at least two images of one person in the same group)"
        )
    return disp, used_by


def _summary(rows: Sequence[GroupRates], used_by: dict[str, dict[str, float]], boot: tuple[np.ndarray, np.ndarray],
             alpha: float, ci_level: float) -> dict[str, Any]:
    """Phase 8: FDR, Inequity Rate and GARBE over the groups both metrics compared (else every group with both
    rates), with bootstrap CIs from the same resamples."""
    order = [r.group for r in rows]
    fmr_rates, fnmr_rates = _rates(rows, "fmr"), _rates(rows, "fnmr")
    both = [g for g in order if g in used_by["fmr"] and g in used_by["fnmr"]]
    if len(both) < 2:
        both = [g for g in order if g in fmr_rates and g in fnmr_rates]
    n_fmr = [rows[order.index(g)].n_impostor_pairs for g in both]
    n_fnmr = [rows[order.index(g)].n_genuine_pairs for g in both]
    fv = [fmr_rates[g] for g in both]
    nv = [fnmr_rates[g] for g in both]
    summary: dict[str, Any] = {
        "fdr": fairness_discrepancy_rate(fv, nv, alpha),
        "inequity_rate": inequity_rate(fv, n_fmr, nv, n_fnmr),
        **garbe(fv, nv, alpha),
        "groups_used": both,
        "alpha": alpha,
    }
    boot_fmr, boot_fnmr = boot
    if len(both) >= 2 and len(boot_fmr) >= 2:
        idx = [order.index(g) for g in both]
        sf_fdr, sf_ir, sf_ga = [], [], []
        for bf, bn in zip(boot_fmr[:, idx], boot_fnmr[:, idx]):
            if not (np.isfinite(bf).all() and np.isfinite(bn).all()):
                continue
            sf_fdr.append(fairness_discrepancy_rate(bf, bn, alpha))
            sf_ir.append(inequity_rate(bf, n_fmr, bn, n_fnmr))
            sf_ga.append(garbe(bf, bn, alpha)["garbe"])
        summary["fdr_ci"] = list(_ci(np.array(sf_fdr, dtype=float), ci_level))
        summary["inequity_rate_ci"] = list(_ci(np.array(sf_ir, dtype=float), ci_level))
        summary["garbe_ci"] = list(_ci(np.array(sf_ga, dtype=float), ci_level))
    return summary


# --------------------------------------------------------------------------- the measure


def verification_fairness(
    embeddings: np.ndarray,
    identities: Sequence[Any],
    groups: Sequence[Any] | Any,
    *,
    target_fmr: float = 1e-3,
    seed: int = 0,
    attribute: str | None = None,
    group_order: Sequence[str] | None = None,
    max_genuine_pairs: int = 100_000,
    max_genuine_pairs_per_identity: int | None = None,
    max_impostor_pairs: int = 200_000,
    threshold_pairs: int = 1_000_000,
    threshold: float | None = None,
    n_bootstrap: int = 200,
    ci_level: float = 0.95,
    min_identities: int = 10,
    min_genuine_pairs: int = 30,
    alpha: float = 0.5,
    chunk_size: int = DEFAULT_CHUNK,
) -> VerificationFairnessResult:
    """Measure how 1:1 verification errors differ between demographic groups, the NIST way.

    Embeddings (n, d) are L2-normalised and compared by cosine similarity. Genuine pairs are same-identity
    pairs, impostor pairs different-identity pairs; both are enumerated exhaustively when a group (or group
    pair) has at most ``max_genuine_pairs`` / ``max_impostor_pairs`` of them, else drawn uniformly with
    ``seed``; ``max_genuine_pairs_per_identity`` optionally limits each person's share (a warning says
    when one identity supplies over a quarter of a group's genuine pairs). ONE global threshold is set at
    ``target_fmr`` on ``threshold_pairs`` impostor pairs drawn from
    all images with an identity (or given as ``threshold``), then per-group FMR and FNMR are computed with
    fairlearn's MetricFrame over same-group pairs (a pair whose two images are in different groups counts
    in the cross-group FMR matrix, not in a group's rates). ``groups`` holds a label per image (None =
    missing: the image is left out of group rates) or is an :class:`~faceaudit.data.Attribute` (its bins
    are used). Confidence intervals come from a bootstrap that resamples IDENTITIES with replacement
    (pairs of the same person are not independent), at the fixed threshold. Groups with fewer than
    ``min_identities`` identities, fewer than ``min_genuine_pairs`` genuine pairs or fewer than
    3 / target_fmr impostor pairs (rule of three: zero false matches in fewer pairs cannot show FMR
    <= target) are flagged ``small`` with a warning, and are left out of disparities and summary measures
    whenever at least two other groups remain. Zero rates: see :mod:`faceaudit.stats`.
    """
    if hasattr(groups, "groups") and hasattr(groups, "group_order"):
        attribute = attribute or getattr(groups, "name", None)
        group_order = group_order or list(groups.group_order)
        groups = groups.groups
    emb = l2_normalize(embeddings)
    n = emb.shape[0]
    ids_raw = np.asarray(identities, dtype=object)
    grp_raw = np.asarray(groups, dtype=object)
    if ids_raw.shape != (n,) or grp_raw.shape != (n,):
        raise InputError(
            f"embeddings have {n} rows but identities have shape {ids_raw.shape} and groups {grp_raw.shape}; "
            "give one identity and one group per image"
        )
    if not 0.0 < target_fmr < 1.0:
        raise InputError(f"target_fmr must be in (0, 1), got {target_fmr}")
    rng = np.random.default_rng(seed)
    warns: list[str] = []

    labels = _prepare_labels(ids_raw, grp_raw, group_order, warns)
    thr, realized_fmr, n_threshold_pairs = _global_threshold(
        emb, labels, threshold, threshold_pairs, target_fmr, rng, chunk_size)  # fmt: skip
    members = labels.members()
    pairs = _score_pairs(emb, labels, members, thr, max_genuine_pairs=max_genuine_pairs,
                         per_identity=max_genuine_pairs_per_identity, max_impostor_pairs=max_impostor_pairs,
                         rng=rng, chunk_size=chunk_size)  # fmt: skip
    rates = _rates_by_group(pairs, labels.order)
    boot = _bootstrap_rates(labels, pairs, len(labels.order), int(n_bootstrap), rng)
    rule = _SmallGroupRule(min_identities, min_genuine_pairs, int(math.ceil(3.0 / target_fmr)))
    rows = _group_rows(labels, members, pairs, rates, boot, rule, ci_level, warns)
    disp, used_by = _disparities(rows, warns)
    summary = _summary(rows, used_by, boot, alpha, ci_level)

    settings = {
        "target_fmr": target_fmr,
        "seed": seed,
        "similarity": "cosine",
        "match_rule": "score >= threshold",
        "threshold_given": threshold is not None,
        "max_genuine_pairs": max_genuine_pairs,
        "max_genuine_pairs_per_identity": max_genuine_pairs_per_identity,
        "max_impostor_pairs": max_impostor_pairs,
        "threshold_pairs": threshold_pairs,
        "n_bootstrap": int(n_bootstrap),
        "ci_level": ci_level,
        "bootstrap_unit": "identity",
        "min_identities": min_identities,
        "min_genuine_pairs": min_genuine_pairs,
        "min_impostor_pairs": rule.min_impostor_pairs,
        "alpha": alpha,
        "zero_rate_handling": "ratios use 0.5/n_pairs for a zero rate; differences, FDR and GARBE use raw rates",
    }
    extra = {
        "n_threshold_impostor_pairs": n_threshold_pairs,
        "threshold_fmr_realized": realized_fmr,
        "genuine_pairs_available": {g: int(pairs.gen_total[k]) for k, g in enumerate(labels.order)},
        "n_images_missing_group": labels.n_missing_group,
    }
    cross = {"groups": list(labels.order), "matrix": pairs.cell_fmr, "pairs": pairs.cell_n,
             "pairs_available": pairs.cell_total}  # fmt: skip
    result = VerificationFairnessResult(
        attribute=attribute,
        target_fmr=float(target_fmr),
        threshold=float(thr),
        n_identities=labels.n_identities,
        n_images=int(labels.id_ok.sum()),
        n_genuine_pairs=int(len(pairs.gg)),
        n_impostor_pairs=int(pairs.n_impostor),
        groups=tuple(rows),
        disparities=disp,
        summary=summary,
        cross_group_fmr=cross,
        warnings=tuple(warns),
        settings=settings,
        extra=extra,
    )
    log.info("verification fairness (%s): threshold %.4f at FMR %g", attribute, thr, target_fmr)
    return result
