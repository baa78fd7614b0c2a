"""Genuine / impostor pair sampling (deterministic, exhaustive when small) and chunked cosine scoring."""

from __future__ import annotations

import numpy as np

from faceaudit.errors import InputError

#: Pairs scored per chunk; memory is O(chunk_size * dim) whatever the number of pairs.
DEFAULT_CHUNK = 16_384
#: Largest candidate set enumerated outright when sampling a large share of it.
_ENUMERATE_MAX = 8_000_000


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64, so scores at the threshold do not depend on float32 rounding).

    Raises InputError for zero or non-finite rows.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise InputError(f"embeddings must be a 2-D array (n_images, dim), got shape {e.shape}")
    bad = ~np.isfinite(e).all(1)
    if bad.any():
        raise InputError(f"embeddings: {int(bad.sum())} row(s) contain NaN/inf (first row {int(np.flatnonzero(bad)[0])})")
    norms = np.linalg.norm(e, axis=1)
    if (norms == 0).any():
        raise InputError(f"embeddings: row {int(np.flatnonzero(norms == 0)[0])} is all zeros; cosine similarity is undefined")
    return e / norms[:, None]


def score_pairs(
    embeddings: np.ndarray, i: np.ndarray, j: np.ndarray, *, chunk_size: int = DEFAULT_CHUNK, normalized: bool = False
) -> np.ndarray:
    """Cosine similarity of pairs (i[k], j[k]), computed in chunks so memory stays bounded for millions of pairs.

    Only ``chunk_size`` pairs of embedding rows are gathered at a time (peak extra memory about
    ``2 * chunk_size * dim * 8`` bytes), instead of materialising all gathered rows or the full n x n matrix.
    Returns float64 scores in [-1, 1].
    """
    e = embeddings if normalized else l2_normalize(embeddings)
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if i.shape != j.shape or i.ndim != 1:
        raise InputError(f"pair index arrays must be 1-D and of equal length, got {i.shape} and {j.shape}")
    out = np.empty(len(i), dtype=np.float64)
    step = max(1, int(chunk_size))
    for s in range(0, len(i), step):
        a = e[i[s : s + step]]
        b = e[j[s : s + step]]
        out[s : s + step] = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    return out


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based; much faster than hash-based np.unique for millions of int64 keys)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if x.size else x


def _triu_from_index(r: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map linear index r of the strict upper triangle (row-major) of an m x m matrix to (row, col)."""
    r = r.astype(np.int64)
    m = m.astype(np.int64)
    b = 2 * m - 1
    row = np.floor((b - np.sqrt(np.maximum(b.astype(float) ** 2 - 8.0 * r, 0.0))) / 2).astype(np.int64)
    start = row * (2 * m - row - 1) // 2
    # fix floating-point off-by-one
    for _ in range(2):
        over = start > r
        row[over] -= 1
        start = row * (2 * m - row - 1) // 2
        nxt = (row + 1) * (2 * m - row - 2) // 2
        under = nxt <= r
        row[under] += 1
        start = row * (2 * m - row - 1) // 2
    col = r - start + row + 1
    return row, col


def genuine_pairs(
    members: np.ndarray,
    ident: np.ndarray,
    cap: int,
    rng: np.random.Generator,
    *,
    per_identity: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Same-identity pairs among image indices ``members``: all of them if at most ``cap``, else a uniform sample.

    ``per_identity`` (optional) first limits each identity to that many of its pairs (drawn uniformly), so
    that a person with hundreds of images cannot dominate a group's FNMR. Returns (i, j, total) with i < j
    image indices and ``total`` the number of pairs that exist (before any limit).
    """
    members = np.sort(np.asarray(members, dtype=np.int64))
    if len(members) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    order = np.argsort(ident[members], kind="stable")
    sorted_members = members[order]
    ids = ident[sorted_members]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)])
    counts = sizes * (sizes - 1) // 2
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    cum = np.cumsum(counts)
    if per_identity is not None and (counts > per_identity).any():
        parts = []
        for k in np.flatnonzero(counts):
            off = cum[k] - counts[k]
            if counts[k] > per_identity:
                parts.append(off + np.sort(rng.choice(counts[k], size=int(per_identity), replace=False)))
            else:
                parts.append(off + np.arange(counts[k], dtype=np.int64))
        pool = np.concatenate(parts)
        lin = pool if len(pool) <= cap else np.sort(rng.choice(pool, size=cap, replace=False))
    elif total <= cap:
        lin = np.arange(total, dtype=np.int64)
    else:
        lin = np.sort(rng.choice(total, size=cap, replace=False))
    which = np.searchsorted(cum, lin, side="right")
    local = lin - (cum[which] - counts[which])
    r, c = _triu_from_index(local, sizes[which])
    base = starts[which]
    i = sorted_members[base + r]
    j = sorted_members[base + c]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo, hi, total


def impostor_count(a_members: np.ndarray, b_members: np.ndarray, ident: np.ndarray, same: bool) -> int:
    """Number of different-identity pairs between two image sets (within one set when ``same``)."""
    ia = ident[a_members]
    if same:
        _, cnt = np.unique(ia, return_counts=True)
        n = len(ia)
        return int(n * (n - 1) // 2 - (cnt * (cnt - 1) // 2).sum())
    ib = ident[b_members]
    ua, ca = np.unique(ia, return_counts=True)
    ub, cb = np.unique(ib, return_counts=True)
    common, xa, xb = np.intersect1d(ua, ub, return_indices=True)
    return int(len(ia) * len(ib) - (ca[xa] * cb[xb]).sum())


def impostor_pairs(
    a_members: np.ndarray,
    b_members: np.ndarray,
    ident: np.ndarray,
    cap: int,
    rng: np.random.Generator,
    *,
    same: bool,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Different-identity pairs between two image sets (within one set when ``same``), exhaustive when small.

    All pairs are enumerated when they number at most ``cap`` (and enumeration is cheap); otherwise ``cap``
    distinct pairs are drawn uniformly at random (rejection of same-identity draws, then de-duplication), so
    the result is deterministic for a given ``rng``. Returns (i, j, total) with ``total`` the pairs that exist.
    """
    a = np.sort(np.asarray(a_members, dtype=np.int64))
    b = np.sort(np.asarray(b_members, dtype=np.int64))
    total = impostor_count(a, b, ident, same)
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    n_all = len(a) * (len(a) - 1) // 2 if same else len(a) * len(b)
    want = min(cap, total)
    # enumerate when everything is wanted, or when a large share of a modest set is wanted (rejection
    # sampling would then spend its time re-drawing pairs it already has)
    if (total <= cap and n_all <= max(4 * cap, 1_000_000)) or (want * 4 >= total and n_all <= _ENUMERATE_MAX):
        if same:
            r, c = np.triu_indices(len(a), k=1)
            i, j = a[r], a[c]
        else:
            r, c = np.divmod(np.arange(n_all, dtype=np.int64), len(b))
            i, j = a[r], b[c]
        keep = ident[i] != ident[j]
        i, j = i[keep], j[keep]
        if len(i) > want:
            pick = np.sort(rng.choice(len(i), size=want, replace=False))
            i, j = i[pick], j[pick]
        return np.minimum(i, j), np.maximum(i, j), total
    n_big = int(max(a.max(), b.max())) + 1
    keys = np.empty(0, dtype=np.int64)
    for _ in range(100):
        need = want - len(keys)
        draw = int(need * 1.3) + 64
        i = a[rng.integers(0, len(a), draw)]
        j = b[rng.integers(0, len(b), draw)]
        ok = (ident[i] != ident[j]) & (i != j)
        i, j = i[ok], j[ok]
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        keys = _sorted_unique(np.r_[keys, lo * n_big + hi])
        if len(keys) >= want:
            break
    if len(keys) > want:
        keys = np.sort(rng.choice(keys, size=want, replace=False))
    i, j = np.divmod(keys, n_big)
    return i, j, total

__all__ = [
    "DEFAULT_CHUNK",
    "genuine_pairs",
    "impostor_count",
    "impostor_pairs",
    "l2_normalize",
    "score_pairs",
]
