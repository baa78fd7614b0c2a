"""Notice a wrong input spec: does another channel order or normalisation separate faces clearly better?

A model fed BGR when it wants RGB (or pixels in 0..1 when it wants -1..1) still
runs and still gives embeddings, only worse ones, and every number of the audit
shifts with them. With identities in the manifest this module scores a small
sample of genuine and impostor pairs with the final embedding under the spec in
use and under a few variants (the channel-swapped twin and the common
normalisations, in both orders) and names a variant that is clearly better.

The rule (`RULE`): a variant is clearly better when, on the same pairs, either
its AUC (the share of genuine/impostor pairs it orders correctly) or its FNMR at
the audit's FMR is better than that of the spec in use with the whole 95%
interval of the difference on the better side of 0 (paired identity-cluster
bootstrap; Bonferroni over both statistics and all variants), and it makes at
least `MIN_ERROR_REDUCTION` fewer errors by that statistic (misordered pairs,
or missed genuine pairs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit.errors import FaceAuditError

log = logging.getLogger(__name__)

#: Images scored per variant (at most); identities are sampled whole, up to `IMAGES_PER_IDENTITY` images each.
CHECK_MAX_IMAGES = 300
IMAGES_PER_IDENTITY = 4
#: Below these the check says it could not tell.
MIN_IDENTITIES = 8
MIN_GENUINE_PAIRS = 20
MAX_IMPOSTOR_PAIRS = 50_000
BOOTSTRAP = 400
#: A better variant misorders at least this share fewer genuine/impostor pairs (1 - AUC) than the spec in use.
MIN_ERROR_REDUCTION = 0.2
#: (mean, std) of the common conventions tried besides the one in use: -1..1 (ArcFace), 0..1, raw 0..255.
NORMALISATIONS = ((127.5, 127.5), (0.0, 255.0), (0.0, 1.0))
RULE = (
    "a variant is clearly better when its AUC is higher, or its FNMR at the audit's FMR lower, than that of the "
    "spec in use with the whole 95% paired identity-bootstrap interval of the difference on that side of 0 "
    "(Bonferroni over both statistics and all variants), and it makes at least "
    f"{MIN_ERROR_REDUCTION:.0%} fewer errors by that statistic (misordered pairs, or missed genuine pairs)"
)


def _num(v: float) -> str:
    return f"{v:g}"


def _value(triple: Sequence[float]) -> str:
    return _num(triple[0]) if len(set(triple)) == 1 else ",".join(_num(v) for v in triple)


def describe(spec: Any) -> str:
    """'BGR, mean 127.5, std 127.5' for an InputSpec."""
    return f"{spec.channel_order}, mean {_value(spec.mean)}, std {_value(spec.std)}"


def flags_for(spec: Any, current: Any) -> str:
    """The command-line flags that turn `current` into `spec` (e.g. '--channel-order BGR --std 255')."""
    out = []
    if spec.channel_order != current.channel_order:
        out.append(f"--channel-order {spec.channel_order}")
    if tuple(spec.mean) != tuple(current.mean):
        out.append(f"--mean {_value(spec.mean)}")
    if tuple(spec.std) != tuple(current.std):
        out.append(f"--std {_value(spec.std)}")
    return " ".join(out)


def spec_variants(spec: Any) -> list[Any]:
    """The channel-swapped twin first, then the common normalisations in both orders (the spec in use left out)."""
    other = "BGR" if spec.channel_order == "RGB" else "RGB"
    cands = [replace(spec, channel_order=other)]
    for order in (spec.channel_order, other):
        for m, s in NORMALISATIONS:
            cands.append(replace(spec, channel_order=order, mean=(m, m, m), std=(s, s, s)))
    out: list[Any] = []
    for c in cands:
        if c != spec and c not in out:
            out.append(c)
    return out


def sample_rows(identities: np.ndarray, seed: int, max_images: int = CHECK_MAX_IMAGES) -> np.ndarray:
    """Rows of whole identities with two or more images (up to IMAGES_PER_IDENTITY each), seeded, sorted."""
    valid = np.array([v is not None and v == v and str(v) != "" for v in identities], dtype=bool)
    labels = np.asarray(identities, dtype=object)
    idx = np.flatnonzero(valid)
    if not len(idx):
        return idx
    names, inverse = np.unique(labels[idx].astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    total = 0
    for k in rng.permutation(len(names)):
        members = idx[inverse == k]
        if len(members) < 2:
            continue
        take = rng.choice(members, size=min(len(members), IMAGES_PER_IDENTITY), replace=False)
        picked.append(take)
        total += len(take)
        if total >= max_images:
            break
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def _stats_fn(gen: np.ndarray, imp: np.ndarray, g_id: np.ndarray, i_a: np.ndarray, i_b: np.ndarray,
              target_fmr: float):  # noqa: ANN202
    """A function of identity weights (B, n_id) -> (AUC, FNMR at `target_fmr`), each (B,), for weighted pairs.

    A genuine pair weighs its identity's weight, an impostor pair the product of
    its two identities' weights. AUC counts ties as half; the threshold lies just
    above the highest impostor score outside the top `target_fmr` (weighted)
    share of impostors, as `fairness.threshold_at_fmr` sets it; FNMR is the
    weighted share of genuine scores below it.
    """
    order = np.argsort(imp, kind="stable")
    s_imp = imp[order]
    s_below = np.concatenate([[-np.inf], s_imp])  # s_below[k]: the highest impostor score left out of the top
    lo = np.searchsorted(s_imp, gen, side="left")
    hi = np.searchsorted(s_imp, gen, side="right")
    a_sorted, b_sorted = i_a[order], i_b[order]

    def stats(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        aucs, fnmrs = [], []
        for s in range(0, len(weights), 32):  # 32 replicates at a time: memory ~ 32 x n_impostor floats
            w = weights[s:s + 32].astype(np.float64)
            wi = w[:, a_sorted] * w[:, b_sorted]
            cw = np.concatenate([np.zeros((len(w), 1)), np.cumsum(wi, axis=1)], axis=1)
            total = cw[:, -1:]
            below = cw[:, lo] + 0.5 * (cw[:, hi] - cw[:, lo])
            wg = w[:, g_id]
            k = (total - cw <= target_fmr * total).argmax(axis=1)  # fewest impostors kept above: tail share <= target
            t = np.nextafter(s_below[k], np.inf)  # just above the highest impostor left below, as threshold_at_fmr
            with np.errstate(invalid="ignore", divide="ignore"):
                aucs.append((wg * below).sum(1) / (wg.sum(1) * total[:, 0]))
                fnmrs.append((wg * (gen[None, :] < t[:, None])).sum(1) / wg.sum(1))
        return np.concatenate(aucs), np.concatenate(fnmrs)

    return stats


def _interval(diff: np.ndarray, alpha: float) -> list[float | None]:
    diff = diff[np.isfinite(diff)]
    return np.quantile(diff, [alpha / 2, 1 - alpha / 2]).tolist() if len(diff) else [None, None]


def check_input_spec(model: Any, paths: Sequence[Path | str], identities: np.ndarray | None,
                     embeddings: np.ndarray | None, *, landmarks: np.ndarray | None = None,
                     cache_dir: Path | None = None, target_fmr: float = 1e-3, seed: int = 0,
                     batch_size: int = 64, max_images: int = CHECK_MAX_IMAGES) -> dict[str, Any]:
    """Score a sample of genuine/impostor pairs under the spec in use and its variants; say if one is clearly better.

    `paths`, `identities`, `embeddings` (final layer, under the spec in use)
    and `landmarks` are aligned row by row (the audited rows). Variants are
    extracted through the same feature cache as the audit. Returns the report's
    `input_check` entry: `status` "ok", "better_setting" or "not_checked" (with
    `reason`), the spec in use and every variant with AUC and FNMR, and
    `better` (the best clearly better variant, with the `flags` that select it).
    """
    from faceaudit.backends import PrecomputedFeatures
    from faceaudit.backends.spec import spec_source
    from faceaudit.data.preprocess import PreprocessSpec
    from faceaudit.fairness import genuine_pairs, impostor_pairs, l2_normalize, score_pairs
    from faceaudit.features import extract_features

    spec = model.input_spec
    base: dict[str, Any] = {"status": "not_checked", "reason": None, "rule": RULE, "spec": describe(spec),
                            "source": spec_source(model), "better": None, "variants": []}
    if isinstance(model, PrecomputedFeatures):
        return {**base, "reason": "The features are precomputed, so no input spec applies to them."}
    if identities is None:
        return {**base, "reason": "The manifest has no `identity` column, so the input spec (channel order, "
                                  "mean, std) could not be checked against genuine and impostor pairs."}
    if embeddings is None:
        return {**base, "reason": "The final embedding layer was not extracted, so the input spec could not be checked."}
    rows = sample_rows(np.asarray(identities, dtype=object), seed, max_images)
    _, ident = np.unique(np.asarray(identities, dtype=object)[rows].astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    gi, gj, _ = genuine_pairs(np.arange(len(rows)), ident, 1_000_000, rng)
    n_id = int(ident.max()) + 1 if len(ident) else 0
    if n_id < MIN_IDENTITIES or len(gi) < MIN_GENUINE_PAIRS:
        return {**base, "reason": f"Too few identities with two or more images ({n_id}, {len(gi)} genuine pairs; "
                                  f"at least {MIN_IDENTITIES} and {MIN_GENUINE_PAIRS} needed) to check the input spec."}
    ii, ij, _ = impostor_pairs(np.arange(len(rows)), np.arange(len(rows)), ident, MAX_IMPOSTOR_PAIRS, rng, same=True)
    sample_paths = [paths[i] for i in rows]
    sample_lms = None if landmarks is None else np.asarray(landmarks)[rows]

    def scores(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = l2_normalize(emb)
        return score_pairs(e, gi, gj, normalized=True), score_pairs(e, ii, ij, normalized=True)

    one = np.ones((1, n_id))

    def stats_of(gen: np.ndarray, imp: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _stats_fn(gen, imp, ident[gi], ident[ii], ident[ij], target_fmr)(w)

    cur_gen, cur_imp = scores(np.asarray(embeddings)[rows])
    (cur_auc,), (cur_fnmr,) = stats_of(cur_gen, cur_imp, one)
    variants = spec_variants(spec)
    weights = np.random.default_rng([seed, 0x5BEC]).multinomial(n_id, np.full(n_id, 1.0 / n_id), size=BOOTSTRAP)
    cur_auc_b, cur_fnmr_b = stats_of(cur_gen, cur_imp, weights)
    alpha = 0.05 / (2 * len(variants))
    margin = 1 - MIN_ERROR_REDUCTION
    entries = []
    for v in variants:
        entry: dict[str, Any] = {"name": describe(v), "channel_order": v.channel_order, "mean": list(v.mean),
                                 "std": list(v.std), "flags": flags_for(v, spec), "better": False}
        try:
            fs = extract_features(model, sample_paths, [model.final_layer], landmarks=sample_lms,
                                  batch_size=batch_size, cache_dir=cache_dir, progress=False,
                                  preprocess=PreprocessSpec.from_input_spec(v))
            if not all(fs.ok):
                raise FaceAuditError(f"{len(fs.failed)} sample image(s) could not be read")
            gen, imp = scores(fs.features[model.final_layer])
        except FaceAuditError as exc:  # e.g. all-zero embeddings under a far-off normalisation
            entries.append({**entry, "auc": None, "fnmr": None, "auc_diff": None, "auc_diff_ci": None,
                            "fnmr_diff": None, "fnmr_diff_ci": None, "note": f"not scored: {exc}"})
            continue
        (auc,), (fnmr,) = stats_of(gen, imp, one)
        auc_b, fnmr_b = stats_of(gen, imp, weights)
        auc_ci = _interval(auc_b - cur_auc_b, alpha)
        fnmr_ci = _interval(fnmr_b - cur_fnmr_b, alpha)
        by_auc = auc_ci[0] is not None and auc_ci[0] > 0 and (1 - auc) <= margin * (1 - cur_auc)
        by_fnmr = fnmr_ci[1] is not None and fnmr_ci[1] < 0 and fnmr <= margin * cur_fnmr
        entries.append({**entry, "auc": float(auc), "fnmr": float(fnmr), "auc_diff": float(auc - cur_auc),
                        "auc_diff_ci": auc_ci, "fnmr_diff": float(fnmr - cur_fnmr), "fnmr_diff_ci": fnmr_ci,
                        "better": bool(by_auc or by_fnmr),
                        "better_by": [k for k, b in (("auc", by_auc), ("fnmr", by_fnmr)) if b]})
    winners = [e for e in entries if e["better"]]
    best = max(winners, key=lambda e: (e["auc"], -e["fnmr"])) if winners else None
    log.info("input-spec check: in use AUC %.4f; best variant %s", cur_auc, best and best["name"])
    return {
        **base,
        "status": "better_setting" if best else "ok",
        "in_use": {"name": describe(spec), "channel_order": spec.channel_order, "mean": list(spec.mean),
                   "std": list(spec.std), "auc": float(cur_auc), "fnmr": float(cur_fnmr)},
        "variants": entries,
        "better": best,
        "n_images": int(len(rows)),
        "n_identities": n_id,
        "n_genuine": int(len(gi)),
        "n_impostor": int(len(ii)),
        "target_fmr": target_fmr,
        "bootstrap": BOOTSTRAP,
    }


def check_message(check: Any, model_name: str | None = None) -> str | None:
    """One line for the terminal and the report when a better setting was found, else None."""
    if not check or check.get("status") != "better_setting" or not check.get("better"):
        return None
    b, cur = check["better"], check.get("in_use") or {}
    whose = f" for {model_name}" if model_name else ""
    return (
        f"The input spec in use{whose} ({check.get('spec')}, from {check.get('source')}) looks wrong: "
        f"with {b['name']} the final embedding separates genuine from impostor pairs clearly better "
        f"(AUC {b['auc']:.4f} vs {cur.get('auc', float('nan')):.4f}; FNMR at FMR {check.get('target_fmr'):g} "
        f"{b['fnmr']:.4f} vs {cur.get('fnmr', float('nan')):.4f}, on {check.get('n_images')} images). "
        f"Rerun with {b['flags']} (or save it with `faceaudit spec MODEL {b['flags']} --write`)."
    )

__all__ = [
    "BOOTSTRAP",
    "CHECK_MAX_IMAGES",
    "IMAGES_PER_IDENTITY",
    "MAX_IMPOSTOR_PAIRS",
    "MIN_ERROR_REDUCTION",
    "MIN_GENUINE_PAIRS",
    "MIN_IDENTITIES",
    "NORMALISATIONS",
    "RULE",
    "check_input_spec",
    "check_message",
    "describe",
    "flags_for",
    "sample_rows",
    "spec_variants",
]
