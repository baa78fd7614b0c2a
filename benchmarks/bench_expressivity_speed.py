"""Speed of batched expressivity (estimate_many) against a one-at-a-time loop of the same estimator.

Run: python benchmarks/bench_expressivity_speed.py [--quick] [--repeat N] [--device cuda] [--threads N]
     [--loop-threads N] [--workers N] [--option KEY=VALUE]

Workload (default): 5 layers x 3 attributes (2 continuous, 1 categorical), n = 10,000 rows,
d = 512 features per layer (read whole: no reduction up to 1,024), default settings: each pair
cross-fitted over 5 folds with one critic per fold, and its permutation null likewise (10 critics
per pair, 150 in all; --folds and --seeds change that). Three ways to train the same critics with the same seeds:

* "batched": estimate_many's default. On CPU each attribute kind is split into stacks
  (batched matmuls) that train `workers` at a time, one per torch thread, each on its
  own thread with an equal share of torch's threads (--workers N to choose).
* "batched, one stack at a time": the same with workers=1, every stack using all of
  torch's threads (the gain of the parallel workers, measured in the same run).
* "one at a time" (the baseline): the critics trained one by one
  (estimate_many(..., batched=False)), with torch's threads (--loop-threads N to change).

A small warm-up run takes the process's one-time costs first. Prints the wall times, the
speed-up of each over the baseline, and the largest difference between the batched and the
one-at-a-time results (0 on 2 cores with the default threads).
A shared machine's speed drifts by 10-25% between runs of a few minutes, which moves a single
ratio as much: --repeat N runs the three N times, interleaved, and prints each round's times and
speed-ups and their medians (the median of the rounds' ratios, each measured minutes apart at most).
A loop of single critics gains nothing from a second thread (its matmuls are too small), so
--loop-threads 1 times the loop at its own best setting, the stricter baseline; the features'
PCA then runs on one thread, its rounding differs, and a critic whose validation curve is flat
can stop at another step (about 0.01 nats apart).
--device cuda runs them on the GPU (there a stack holds all critics of one attribute kind and
the workers do not apply).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_expressivity_accuracy import _literal
from faceaudit.expressivity import estimate_many
from faceaudit.expressivity.training import resolve_device


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
    ap.add_argument("--workers", type=int, default=None, help="stacks trained at once (default: one per thread)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three runs, interleaved (default 1)")
    ap.add_argument("--folds", type=int, default=5, help="cross-fitting folds per pair (default 5, the default)")
    ap.add_argument("--seeds", type=int, default=1, help="critics per fold (default 1, the default)")
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
    seeds, folds = args.seeds, args.folds
    n_critics = layers * len(attrs) * folds * (seeds + 1)
    print(f"{layers} layers x {len(attrs)} attributes x {folds} folds x ({seeds} seed + 1 null) = {n_critics} critics; "
          f"n={n}, d=512, device={args.device}, threads={threads} (loop: {loop_threads}), "
          f"workers={args.workers or threads if resolve_device(args.device).type == 'cpu' else 'n/a'}, options={opts}")
    # one-time costs of the process (the first Adam step imports torch._dynamo, about 1 s) fall on a
    # small warm-up run, not on whichever timed configuration comes first
    wf, wa = workload(200, 16, 1, seed=1)
    estimate_many(wf, wa, seeds=1, folds=2, device=args.device, progress=False, max_steps=2, min_steps=1)
    configs = (("batched", {"workers": args.workers}), ("batched, one stack at a time", {"workers": 1}),
               ("one at a time (baseline)", {"batched": False}))
    rounds: list[dict[str, float]] = []
    diffs: list[tuple[float, float]] = []
    for r in range(max(1, args.repeat)):
        runs = {}
        for label, kw in configs:
            torch.set_num_threads(loop_threads if "batched" in kw else threads)
            t0 = time.time()
            res = estimate_many(feats, attrs, seeds=seeds, folds=folds, device=args.device, progress=False, **kw,
                                **opts)
            runs[label] = (time.time() - t0, res)
            print(f"  round {r + 1}: {label}: {runs[label][0]:.1f} s", flush=True)
        rounds.append({label: t for label, (t, _) in runs.items()})
        a, b = runs["batched"][1], runs["one at a time (baseline)"][1]
        diffs.append((max(abs(x - y) for k in a for x, y in zip(a[k].seeds_mi, b[k].seeds_mi)),
                      max(abs(a[k].raw_mi - b[k].raw_mi) for k in a)))
    base = "one at a time (baseline)"
    print(f"{'':30s} {'wall (s)':>9s} {'speed-up':>9s}" + ("   (each round's speed-up)" if len(rounds) > 1 else ""))
    for label, _ in configs:
        walls = [rd[label] for rd in rounds]
        ups = [rd[base] / rd[label] for rd in rounds]
        each = "   " + ", ".join(f"{u:.2f}x" for u in ups) if len(rounds) > 1 else ""
        print(f"{label:30s} {float(np.median(walls)):9.1f} {float(np.median(ups)):8.2f}x{each}")
    if len(rounds) > 1:
        print(f"(medians of {len(rounds)} rounds: wall times and speed-ups are each the median over the rounds)")
    print(f"max |difference| between the two (nats): {max(d[0] for d in diffs):.2e} per seed, "
          f"{max(d[1] for d in diffs):.2e} in the reported MI")
    print(f"{'layer':8s} {'attribute':9s} {'MI (nats)':>9s} {'95% CI':>17s} {'floor':>7s} {'null':>7s}")
    for (layer, attr), v in a.items():
        print(f"{layer:8s} {attr:9s} {v.mi:9.3f} [{v.ci_low:6.3f}, {v.ci_high:6.3f}] {v.probe_mi:7.3f} {v.null_mi:+7.3f}")


if __name__ == "__main__":
    main()
