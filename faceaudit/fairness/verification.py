"""Verification fairness: error rates of 1:1 face verification per demographic group at one global threshold."""

from __future__ import annotations

import logging
import math
import re
import warnings as _warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceaudit.errors import InputError
from faceaudit.fairness.metrics import (
    disparity,
    fairness_discrepancy_rate,
    garbe,
    inequity_rate,
    threshold_at_fmr,
)
from faceaudit.fairness.pairs import DEFAULT_CHUNK, genuine_pairs, impostor_pairs, l2_normalize, score_pairs

log = logging.getLogger(__name__)


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


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

    def to_dict(self) -> dict[str, Any]:
        return _clean(
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
    """Per-group FMR/FNMR at one global threshold, disparities, summary measures and a cross-group FMR matrix."""

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

    def to_dict(self) -> dict[str, Any]:
        return _clean(
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
        out[r] = None if any(_is_missing(p) for p in parts) else sep.join(str(p) for p in parts)
    return out


#: Alias of :func:`combine_groups`.
intersect_groups = combine_groups


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (float, np.floating)) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip() == ""


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
    whenever at least two other groups remain. Zero rates: see :mod:`faceaudit.fairness.metrics`.
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

    id_ok = np.array([not _is_missing(v) for v in ids_raw])
    if not id_ok.all():
        warns.append(f"{int((~id_ok).sum())} image(s) without identity were left out")
    id_labels, ident = np.unique(np.where(id_ok, ids_raw, "").astype(str), return_inverse=True)
    ident = np.where(id_ok, ident, -1).astype(np.int64)
    n_id_total = int(len(np.unique(ident[id_ok])))
    if n_id_total < 2:
        raise InputError(f"verification fairness needs at least two identities, got {n_id_total}")

    g_ok = id_ok & np.array([not _is_missing(v) for v in grp_raw])
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

    # 1. global threshold on impostor pairs over all images with an identity
    all_members = np.flatnonzero(id_ok)
    ti, tj, t_total = impostor_pairs(all_members, all_members, ident, threshold_pairs, rng, same=True)
    if threshold is None:
        t_scores = score_pairs(emb, ti, tj, chunk_size=chunk_size, normalized=True)
        thr = threshold_at_fmr(t_scores, target_fmr)
        realized_fmr = float((t_scores >= thr).mean())
    else:
        thr = float(threshold)
        realized_fmr = None
    del ti, tj

    G = len(order)
    members = [np.flatnonzero(gcode == k) for k in range(G)]

    # 2. genuine pairs within each group
    gen_i, gen_j, gen_g, gen_total = [], [], [], []
    for k in range(G):
        i, j, tot = genuine_pairs(members[k], ident, max_genuine_pairs, rng, per_identity=max_genuine_pairs_per_identity)
        gen_i.append(i), gen_j.append(j), gen_g.append(np.full(len(i), k)), gen_total.append(tot)
    gi, gj, gg = np.concatenate(gen_i), np.concatenate(gen_j), np.concatenate(gen_g)
    g_scores = score_pairs(emb, gi, gj, chunk_size=chunk_size, normalized=True)
    g_err = g_scores < thr  # false non-match

    # 3. impostor pairs per cell (a <= b)
    cell_fmr = [[None] * G for _ in range(G)]
    cell_n = [[0] * G for _ in range(G)]
    cell_total = [[0] * G for _ in range(G)]
    diag_i, diag_j, diag_g, diag_err = [], [], [], []
    n_imp = 0
    for a in range(G):
        for b in range(a, G):
            i, j, tot = impostor_pairs(members[a], members[b], ident, max_impostor_pairs, rng, same=(a == b))
            s = score_pairs(emb, i, j, chunk_size=chunk_size, normalized=True)
            err = s >= thr
            n_imp += len(i)
            cell_n[a][b] = cell_n[b][a] = int(len(i))
            cell_total[a][b] = cell_total[b][a] = tot
            if len(i):
                cell_fmr[a][b] = cell_fmr[b][a] = float(err.mean())
            if a == b:
                diag_i.append(i), diag_j.append(j), diag_g.append(np.full(len(i), a)), diag_err.append(err)
    ii, ij, ig, ie = (np.concatenate(x) for x in (diag_i, diag_j, diag_g, diag_err))

    # 4. per-group rates through fairlearn's MetricFrame (genuine = positive class, match = positive prediction)
    labels_arr = np.asarray(order, dtype=object)
    y_true = np.r_[np.ones(len(gg), dtype=int), np.zeros(len(ig), dtype=int)]
    y_pred = np.r_[(~g_err).astype(int), ie.astype(int)]
    sf = labels_arr[np.r_[gg, ig]] if len(y_true) else np.empty(0, dtype=object)
    fmr_mf, fnmr_mf = _metric_frame_rates(y_true, y_pred, sf) if len(y_true) else ({}, {})
    n_gen_g = np.bincount(gg, minlength=G)
    n_imp_g = np.bincount(ig, minlength=G)

    # 5. bootstrap over identities
    n_boot = int(n_bootstrap)
    boot_fmr = np.full((n_boot, G), np.nan)
    boot_fnmr = np.full((n_boot, G), np.nan)
    n_ident_all = int(ident.max()) + 1
    gid = ident[gi]
    iid_a, iid_b = ident[ii], ident[ij]
    ge, ie_f = g_err.astype(float), ie.astype(float)
    id_codes = np.unique(ident[id_ok])
    for bt in range(n_boot):
        w = np.bincount(rng.choice(id_codes, size=n_id_total, replace=True), minlength=n_ident_all).astype(float)
        wg = w[gid]
        wi = w[iid_a] * w[iid_b]
        den_g = np.bincount(gg, weights=wg, minlength=G)
        num_g = np.bincount(gg, weights=wg * ge, minlength=G)
        den_i = np.bincount(ig, weights=wi, minlength=G)
        num_i = np.bincount(ig, weights=wi * ie_f, minlength=G)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_fnmr[bt] = np.where(den_g > 0, num_g / den_g, np.nan)
            boot_fmr[bt] = np.where(den_i > 0, num_i / den_i, np.nan)

    min_imp = int(math.ceil(3.0 / target_fmr))
    group_rows: list[GroupRates] = []
    fmr_rates: dict[str, float] = {}
    fnmr_rates: dict[str, float] = {}
    for k, g in enumerate(order):
        m = members[k]
        n_ids_k = int(len(np.unique(ident[m])))
        fmr = fmr_mf.get(g) if n_imp_g[k] > 0 else None
        fnmr = fnmr_mf.get(g) if n_gen_g[k] > 0 else None
        reasons = []
        if n_ids_k < min_identities:
            reasons.append(f"{n_ids_k} identities (< {min_identities})")
        if n_gen_g[k] < min_genuine_pairs:
            reasons.append(f"{int(n_gen_g[k])} genuine pairs (< {min_genuine_pairs})")
        if n_imp_g[k] < min_imp:
            reasons.append(f"{int(n_imp_g[k])} impostor pairs (< 3/target_fmr = {min_imp})")
        small = bool(reasons)
        if small:
            warns.append(f"group {g!r} is small ({', '.join(reasons)}): its rates are too uncertain to compare")
        if n_gen_g[k] > 0:
            share = np.bincount(ident[gi[gg == k]]).max() / n_gen_g[k]
            if share > 0.25 and n_ids_k > 2:
                warns.append(
                    f"group {g!r}: one identity supplies {share:.0%} of its genuine pairs, so its FNMR mostly "
                    "reflects that person; set max_genuine_pairs_per_identity to balance"
                )
        if fmr is not None:
            fmr_rates[g] = fmr
        if fnmr is not None:
            fnmr_rates[g] = fnmr
        group_rows.append(
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
                small=small,
                n_false_matches=int(ie[ig == k].sum()),
                n_false_non_matches=int(g_err[gg == k].sum()),
            )
        )
    # Disparities and summaries compare groups large enough to mean something: small groups are left out
    # when at least two others remain (a zero rate in a group of 8 pairs says nothing), else all are used.
    small_set = {row.group for row in group_rows if row.small}
    n_fmr = {g: int(n_imp_g[code_of[g]]) for g in fmr_rates}
    n_fnmr = {g: int(n_gen_g[code_of[g]]) for g in fnmr_rates}

    def _usable(rates: dict[str, float]) -> dict[str, float]:
        big = {g: v for g, v in rates.items() if g not in small_set}
        return big if len(big) >= 2 else dict(rates)

    fmr_used, fnmr_used = _usable(fmr_rates), _usable(fnmr_rates)
    disp = {"fmr": disparity(fmr_used, n_fmr), "fnmr": disparity(fnmr_used, n_fnmr)}
    for kind, d, used, rates in (("fmr", disp["fmr"], fmr_used, fmr_rates), ("fnmr", disp["fnmr"], fnmr_used, fnmr_rates)):
        d["groups_used"] = list(used)
        left_out = [g for g in rates if g not in used]
        if left_out:
            warns.append(f"{kind.upper()} disparities and summaries leave out small group(s) {', '.join(map(repr, left_out))}")
        elif any(g in small_set for g in used) and len(used) > 1:
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
    no_genuine = [g for k, g in enumerate(order) if n_gen_g[k] == 0]
    if no_genuine:
        where = "any group" if len(no_genuine) == G else f"group(s) {', '.join(map(repr, no_genuine))}"
        warns.append(
            f"FNMR cannot be measured for {where}: no genuine pairs (no identity has two images there: "
            "FNMR needs at least two images of one person in the same group)"
        )

    both = [g for g in order if g in fmr_used and g in fnmr_used]
    if len(both) < 2:
        both = [g for g in order if g in fmr_rates and g in fnmr_rates]
    fv = [fmr_rates[g] for g in both]
    nv = [fnmr_rates[g] for g in both]
    summary: dict[str, Any] = {
        "fdr": fairness_discrepancy_rate(fv, nv, alpha),
        "inequity_rate": inequity_rate(fv, [n_fmr[g] for g in both], nv, [n_fnmr[g] for g in both]),
        **garbe(fv, nv, alpha),
        "groups_used": both,
        "alpha": alpha,
    }
    # bootstrap CIs of the summaries (same resamples)
    if len(both) >= 2 and n_boot >= 2:
        idx = [code_of[g] for g in both]
        sf_fdr, sf_ir, sf_ga = [], [], []
        for bt in range(n_boot):
            bf, bn = boot_fmr[bt, idx], boot_fnmr[bt, idx]
            if not (np.isfinite(bf).all() and np.isfinite(bn).all()):
                continue
            sf_fdr.append(fairness_discrepancy_rate(bf, bn, alpha))
            sf_ir.append(inequity_rate(bf, [n_fmr[g] for g in both], bn, [n_fnmr[g] for g in both]))
            sf_ga.append(garbe(bf, bn, alpha)["garbe"])
        summary["fdr_ci"] = list(_ci(np.array(sf_fdr, dtype=float), ci_level))
        summary["inequity_rate_ci"] = list(_ci(np.array(sf_ir, dtype=float), ci_level))
        summary["garbe_ci"] = list(_ci(np.array(sf_ga, dtype=float), ci_level))

    cross = {"groups": list(order), "matrix": cell_fmr, "pairs": cell_n, "pairs_available": cell_total}
    gen_available = {g: int(gen_total[k]) for k, g in enumerate(order)}
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
        "n_bootstrap": n_boot,
        "ci_level": ci_level,
        "bootstrap_unit": "identity",
        "min_identities": min_identities,
        "min_genuine_pairs": min_genuine_pairs,
        "min_impostor_pairs": min_imp,
        "alpha": alpha,
        "zero_rate_handling": "ratios use 0.5/n_pairs for a zero rate; differences, FDR and GARBE use raw rates",
    }
    extra = {
        "n_threshold_impostor_pairs": int(min(threshold_pairs, t_total)),
        "threshold_fmr_realized": realized_fmr,
        "genuine_pairs_available": gen_available,
        "n_images_missing_group": n_missing_group,
    }
    result = VerificationFairnessResult(
        attribute=attribute,
        target_fmr=float(target_fmr),
        threshold=float(thr),
        n_identities=n_id_total,
        n_images=int(id_ok.sum()),
        n_genuine_pairs=int(len(gg)),
        n_impostor_pairs=int(n_imp),
        groups=tuple(group_rows),
        disparities=disp,
        summary=summary,
        cross_group_fmr=cross,
        warnings=tuple(warns),
        settings=settings,
        extra=extra,
    )
    log.info("verification fairness (%s): threshold %.4f at FMR %g", attribute, thr, target_fmr)
    return result
