"""Extraction throughput and memory: faceaudit against plain onnxruntime on the same model and batches.

Run:  python benchmarks/bench_extraction.py [--data DIR] [--images 512] [--batch 64] [--memory-images 10000]

Measures, in one run and on the same pre-decoded batches of real aligned faces:
  * plain onnxruntime inference of the model (baseline, default session options, CPU or CUDA as available);
  * faceaudit final-layer-only extraction (target: within 1.15x of the baseline);
  * faceaudit 5-layer (auto) extraction;
  * end-to-end images/s from JPEG files (decode + preprocess + 5 layers);
  * peak resident memory while extracting --memory-images images x 5 layers (images repeated from the bundle).
Prints a table; never fails on timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FACEAUDIT_SHARED_DATA", str(here.parent / "shared" / "data")))
    ap.add_argument("--images", type=int, default=512, help="images per timing pass")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best is kept)")
    ap.add_argument("--memory-images", type=int, default=10000)
    args = ap.parse_args()
    os.environ.setdefault("FACEAUDIT_NO_PROGRESS", "1")

    import onnxruntime as ort

    from faceaudit.backends import open_model, select_layers
    from faceaudit.backends.onnx_backend import choose_providers
    from faceaudit.data.images import decode_image
    from faceaudit.data.preprocess import PreprocessSpec
    from faceaudit.features import extract_features

    data = Path(args.data)
    model_path = data / "models" / "mobilefacenet.onnx"
    if not model_path.is_file():
        print(f"model not found under {data}; pass --data", file=sys.stderr)
        return 2
    files = sorted((data / "lfw" / "aligned").glob("*.jpg"))
    model = open_model(model_path)
    auto = select_layers(model, "auto")
    spec = PreprocessSpec.from_input_spec(model.input_spec)
    uniq = np.stack([spec(decode_image(p)) for p in files[: min(256, args.images)]])
    x = np.concatenate([uniq] * (args.images // len(uniq) + 1))[: args.images]
    batches = [x[i : i + args.batch] for i in range(0, len(x), args.batch)]
    providers = choose_providers("auto")
    plain = ort.InferenceSession(str(model_path), providers=providers)
    in_name = plain.get_inputs()[0].name

    def run_plain() -> None:
        for b in batches:
            plain.run(None, {in_name: b})

    def run_final() -> None:
        for b in batches:
            model.extract(b, [model.final_layer])

    def run_auto() -> None:
        for b in batches:
            model.extract(b, auto)

    for f in (run_plain, run_final, run_auto):  # warm-up (session creation, allocations)
        f()
    best = {"plain": 1e9, "final": 1e9, "auto": 1e9}
    for _ in range(args.rounds):
        for name, f in (("plain", run_plain), ("final", run_final), ("auto", run_auto)):
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)

    e2e_paths = [files[i % len(files)] for i in range(args.images)]
    t = time.perf_counter()
    extract_features(model, e2e_paths, auto, batch_size=args.batch, progress=False)
    e2e = time.perf_counter() - t

    mem_paths = [files[i % len(files)] for i in range(args.memory_images)]
    rss0 = _rss_mib()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    fs = extract_features(model, mem_paths, auto, batch_size=args.batch, progress=False)
    mem_s = time.perf_counter() - t
    peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_mib = sum(v.nbytes for v in fs.features.values()) / 2**20

    n = args.images
    print(f"model: {model_path.name}  providers: {','.join(providers)}  batch: {args.batch}  images/pass: {n}  "
          f"cpus: {os.cpu_count()}  layers(auto): {len(auto)}")
    print(f"{'measure':<44}{'seconds':>10}{'images/s':>12}{'vs plain':>10}")
    rows = [
        ("plain onnxruntime (baseline)", best["plain"], n),
        ("faceaudit extract, final layer only", best["final"], n),
        ("faceaudit extract, 5 layers (auto)", best["auto"], n),
        ("end to end: JPEG decode+preprocess+5 layers", e2e, n),
    ]
    for label, s, k in rows:
        print(f"{label:<44}{s:>10.3f}{k / s:>12.1f}{s / best['plain']:>9.2f}x")
    print(f"memory: {args.memory_images} images x {len(auto)} layers in {mem_s:.1f} s "
          f"({args.memory_images / mem_s:.1f} images/s); RSS before {rss0:.0f} MiB, peak RSS before {peak0:.0f} MiB, "
          f"peak RSS after {peak1:.0f} MiB (+{peak1 - peak0:.0f} MiB); result arrays {result_mib:.1f} MiB")
    print(f"target final-layer ratio <= 1.15x: {'met' if best['final'] / best['plain'] <= 1.15 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
