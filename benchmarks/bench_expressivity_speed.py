"""Speed of batched expressivity (estimate_many) against a one-at-a-time loop of the same estimator.

Run: python benchmarks/bench_expressivity_speed.py [--quick] [--device cuda] [--threads N] [--loop-threads N]
     [--option KEY=VALUE]

Workload (default): 5 layers x 3 attributes (2 continuous, 1 categorical) x 3 seeds,
plus one permutation null per pair, n = 10,000 rows, d = 512 features per layer,
default estimator settings. "batched" trains all critics of one attribute kind as a
single stack (batched matmuls); "one at a time" trains the same critics one by one
(estimate_many(..., batched=False)), with the same seeds, so the numbers agree.
Prints both wall times, the ratio, and the largest difference between the two results.
Both use torch's default thread count (all cores) unless --threads is given; a loop of
single critics gains nothing from a second thread (its matmuls are too small), so
--loop-threads 1 times the loop at its own best setting for a stricter baseline.
--device cuda runs both on the GPU (there a stack holds all critics of one attribute kind).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_expressivity_accuracy import _literal
from faceaudit.expressivity import estimate_many


def workload(n: int, d: int, layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    age = rng.uniform(1, 90, size=n)
    yaw = rng.uniform(-60, 60, size=n)
    sex = rng.integers(0, 2, size=n)
    z = np.c_[(age - 45) / 25, np.tanh(yaw / 30), sex - 0.5]
    feats = {}
    for i in range(layers):
        A = rng.normal(size=(3, d)) * (0.2 + 0.2 * i)
        feats[f"layer{i}"] = (z @ A + rng.normal(size=(n, d))).astype(np.float32)
    attrs = {"age": (age, "continuous"), "yaw": (yaw, "continuous"), "sex": (sex, "categorical")}
    return feats, attrs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n=2,000, 2 layers, max_steps=300")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (CUDA when available)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--loop-threads", type=int, default=None, help="torch threads for the one-at-a-time loop")
    ap.add_argument("--max-steps", type=int, default=None, help="cap training steps (shorter run, same workload)")
    ap.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="estimator option to try instead of its default, e.g. --option lr=2e-3 (repeatable)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    loop_threads = args.loop_threads or threads
    n, layers, opts = (2000, 2, {"max_steps": 300}) if args.quick else (10_000, 5, {})
    if args.max_steps:
        opts = {"max_steps": args.max_steps}
    opts.update({k: _literal(v) for k, v in (o.split("=", 1) for o in args.option)})
    feats, attrs = workload(n, 512, layers)
    seeds = 3
    n_critics = layers * len(attrs) * (seeds + 1)
    print(f"{layers} layers x {len(attrs)} attributes x {seeds} seeds (+1 null each) = {n_critics} critics; "
          f"n={n}, d=512, device={args.device}, threads={threads} (loop: {loop_threads}), options={opts}")
    t0 = time.time()
    a = estimate_many(feats, attrs, seeds=seeds, device=args.device, progress=False, batched=True, **opts)
    tb = time.time() - t0
    print(f"batched       : {tb:8.1f} s", flush=True)
    torch.set_num_threads(loop_threads)
    t0 = time.time()
    b = estimate_many(feats, attrs, seeds=seeds, device=args.device, progress=False, batched=False, **opts)
    tl = time.time() - t0
    print(f"one at a time : {tl:8.1f} s")
    print(f"speed-up      : {tl / tb:8.2f} x")
    diff = max(abs(x - y) for k in a for x, y in zip(a[k].seeds_mi, b[k].seeds_mi))
    diff_mi = max(abs(a[k].raw_mi - b[k].raw_mi) for k in a)
    print(f"max |difference| between the two (nats): {diff:.2e} per seed, {diff_mi:.2e} in the reported MI")
    print(f"{'layer':8s} {'attribute':9s} {'MI (nats)':>9s} {'95% CI':>17s} {'null':>7s}")
    for (layer, attr), r in a.items():
        print(f"{layer:8s} {attr:9s} {r.mi:9.3f} [{r.ci_low:6.3f}, {r.ci_high:6.3f}] {r.null_mi:+7.3f}")


if __name__ == "__main__":
    main()
