"""Pairs scored per second and peak memory for 10^6 impostor pairs: chunked scoring vs unchunked baselines.

Run: python benchmarks/bench_fairness.py [--pairs 1000000] [--dim 128] [--images 8000]
Peak memory is the peak of Python/numpy allocations during the call (tracemalloc), beyond the inputs.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from faceaudit.fairness import impostor_pairs, l2_normalize, score_pairs, verification_fairness


def _measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, dt, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--images", type=int, default=8_000)
    ap.add_argument("--chunk", type=int, default=16_384)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    ident = np.repeat(np.arange(a.images // 4), 4)
    emb = l2_normalize(rng.normal(size=(len(ident), a.dim)))
    i, j, _ = impostor_pairs(np.arange(len(ident)), np.arange(len(ident)), ident, a.pairs, rng, same=True)
    rows = []
    ref, dt, peak = _measure(lambda: score_pairs(emb, i, j, chunk_size=a.chunk, normalized=True))
    rows.append((f"chunked score_pairs (chunk {a.chunk})", dt, peak, 0.0))
    out, dt, peak = _measure(lambda: np.einsum("ij,ij->i", emb[i], emb[j]))
    rows.append(("baseline: numpy unchunked gather", dt, peak, float(np.abs(out - ref).max())))
    if a.images <= 20_000:
        out, dt, peak = _measure(lambda: (emb @ emb.T)[i, j])
        rows.append((f"baseline: full {len(ident)}x{len(ident)} matrix", dt, peak, float(np.abs(out - ref).max())))
    print(f"{len(i):,} impostor pairs, dim {a.dim}, {len(ident):,} images (float64)")
    print(f"{'method':<42} {'pairs/s':>12} {'seconds':>8} {'peak MiB':>9} {'max |diff|':>11}")
    for name, dt, peak, diff in rows:
        print(f"{name:<42} {len(i) / dt:>12,.0f} {dt:>8.2f} {peak / 2**20:>9.1f} {diff:>11.1e}")
    groups = np.where(ident % 2 == 0, "a", "b")
    _, dt, peak = _measure(
        lambda: verification_fairness(emb, ident, groups, threshold_pairs=a.pairs, n_bootstrap=100, seed=0)
    )
    print(f"end to end verification_fairness (threshold on {a.pairs:,} pairs, 2 groups, 100 bootstraps): "
          f"{dt:.1f} s, peak {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
