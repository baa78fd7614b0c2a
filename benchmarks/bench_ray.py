"""Ray executor against the local executor on real faces: identical arrays, throughput, a cluster projection.

Run:  python benchmarks/bench_ray.py [--data DIR] [--utk 3000] [--lfw 2000] [--cpus 2] [--batch 64]

In one run, on the same images (aligned UTKFace + LFW crops from the data bundle) and the real MobileFaceNet:
  * per-image costs on one core: JPEG decode + preprocessing (aligned crop; raw LFW photo aligned from 5
    landmarks), the model at batch --batch with one onnxruntime thread (5 auto layers), Parquet shard writing;
  * the local executor (thread-pool decode, onnxruntime's default threads) writing a Parquet cache (baseline);
  * the Ray executor on a local Ray cluster that this script starts with --cpus CPUs (one 1-CPU actor per CPU),
    writing its own cache; Ray start-up is timed separately; the arrays are compared with the local ones;
  * Ray scaling: 1 .. --cpus actors on the first --scaling-images images;
  * a projection to a cluster from the measured per-image costs, with its assumptions printed.
Prints tables; never fails on timing (exit 1 only if the two executors' arrays differ).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _du_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("FACEAUDIT_SHARED_DATA", str(here.parent / "shared" / "data")))
    ap.add_argument("--utk", type=int, default=3000, help="aligned UTKFace crops")
    ap.add_argument("--lfw", type=int, default=2000, help="aligned LFW crops")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (= Ray actors)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--layers", default="auto")
    ap.add_argument("--scaling-images", type=int, default=1000)
    ap.add_argument("--cost-images", type=int, default=256, help="images for the per-image cost measurements")
    ap.add_argument("--project-gpus", type=int, default=8)
    ap.add_argument("--project-cpus-per-gpu", type=int, default=8)
    ap.add_argument("--project-gpu-ms", type=float, default=0.2,
                    help="ASSUMED model time per image on one GPU, ms (not measured here)")
    ap.add_argument("--project-images", type=int, default=470_000, help="IJB-C size")
    args = ap.parse_args()
    os.environ.setdefault("FACEAUDIT_NO_PROGRESS", "1")

    import ray

    from faceaudit.backends import open_model, select_layers
    from faceaudit.data.images import decode_image
    from faceaudit.data.preprocess import PreprocessSpec
    from faceaudit.features import RayExecutor, extract_features, read_feature_cache, shard_table, write_shard

    data = Path(args.data)
    model_path = data / "models" / "mobilefacenet.onnx"
    if not model_path.is_file():
        print(f"model not found under {data}; pass --data", file=sys.stderr)
        return 2
    utk = [data / "utkface" / r["path"] for r in _rows(data / "utkface" / "manifest.csv")[: args.utk]]
    lfw_rows = _rows(data / "lfw" / "manifest.csv")
    lfw = [data / "lfw" / r["path"] for r in lfw_rows[: args.lfw]]
    paths = utk + lfw
    n = len(paths)
    print(f"# {n} images ({len(utk)} UTKFace + {len(lfw)} LFW aligned crops), MobileFaceNet, batch {args.batch}, "
          f"layers {args.layers}, machine: {os.cpu_count()} CPU cores visible, Ray {ray.__version__}")

    # -- per-image costs on one core ---------------------------------------------------------------------
    model1 = open_model(model_path, intra_op_threads=1)
    layers = select_layers(model1, args.layers)
    spec = PreprocessSpec.from_input_spec(model1.input_spec)
    sample = paths[: args.cost_images]
    t = time.perf_counter()
    x = np.stack([spec(decode_image(p)) for p in sample])
    c_dec = (time.perf_counter() - t) / len(sample)
    raw_rows = [r for r in lfw_rows if r["raw_path"]][: min(len(sample), 200)]
    lms = [np.array([[float(r[f"lm_x{k}"]), float(r[f"lm_y{k}"])] for k in range(1, 6)]) for r in raw_rows]
    t = time.perf_counter()
    for r, lm in zip(raw_rows, lms):
        spec(decode_image(data / "lfw" / r["raw_path"]), lm)
    c_align = (time.perf_counter() - t) / len(raw_rows)
    model1.extract(x[: args.batch], layers)  # warm the session
    t = time.perf_counter()
    feats = [model1.extract(x[i: i + args.batch], layers) for i in range(0, len(x), args.batch)]
    c_model = (time.perf_counter() - t) / len(x)
    dims = [feats[0][l].shape[1] for l in layers]
    tmp = Path(tempfile.mkdtemp(prefix="faceaudit-bench-ray-"))
    tables = []
    for i, f in enumerate(feats):
        k = len(f[layers[0]])
        tables.append(shard_table(range(k), [str(p) for p in sample[i * args.batch: i * args.batch + k]],
                                  np.ones(k, bool), [""] * k, f, layers, dims))
    write_shard(tmp / "warmup.parquet", tables[0])
    t = time.perf_counter()
    for rep in range(5):
        for i, tab in enumerate(tables):
            write_shard(tmp / f"s{rep}_{i}.parquet", tab)
    c_write = (time.perf_counter() - t) / (5 * len(x))
    print("\n## Per-image costs (one core, measured)")
    print("| step | ms per image |\n|---|---:|")
    print(f"| decode + preprocess, aligned 112x112 JPEG | {c_dec * 1e3:.2f} |")
    print(f"| decode + align from 5 landmarks, raw 250x250 LFW JPEG | {c_align * 1e3:.2f} |")
    print(f"| model, {len(layers)} layers, batch {args.batch}, 1 onnxruntime thread | {c_model * 1e3:.2f} |")
    print(f"| Parquet shard write, atomic ({sum(dims)} floats per image) | {c_write * 1e3:.3f} |")

    # -- local executor (baseline) ------------------------------------------------------------------------
    model = open_model(model_path)
    t = time.perf_counter()
    loc = extract_features(model, paths, args.layers, batch_size=args.batch, cache_dir=tmp / "local", progress=False)
    t_local = time.perf_counter() - t

    # -- Ray executor on a local cluster ------------------------------------------------------------------
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    t_init = time.perf_counter() - t
    try:
        t = time.perf_counter()
        rfs = extract_features(model, paths, args.layers, batch_size=args.batch, cache_dir=tmp / "ray",
                               progress=False, executor=RayExecutor())
        t_ray = time.perf_counter() - t
        scaling = []
        m = min(args.scaling_images, n)
        t = time.perf_counter()
        base = extract_features(model, paths[:m], args.layers, batch_size=args.batch, progress=False)
        scaling.append(("local", "-", time.perf_counter() - t, base))
        for a in range(1, args.cpus + 1):
            t = time.perf_counter()
            fs = extract_features(model, paths[:m], args.layers, batch_size=args.batch, progress=False,
                                  executor=RayExecutor(actors=a))
            scaling.append(("ray", str(a), time.perf_counter() - t, fs))
    finally:
        ray.shutdown()

    same = loc.ok.tolist() == rfs.ok.tolist() and all(np.array_equal(loc.features[k], rfs.features[k]) for k in layers)
    cache_same = all(np.array_equal(read_feature_cache(rfs.cache_dir).features[k], loc.features[k]) for k in layers)
    info = rfs.extra["ray"]
    busy = (rfs.extra["decode_s"] + rfs.extra["model_s"]) / (t_ray * info["actors"])
    print(f"\n## {n} faces: local vs Ray ({args.cpus}-CPU local Ray cluster, {info['actors']} actors x "
          f"{info['cpus_per_actor']:g} CPU)")
    print("| executor | wall s | images/s | throughput vs local | arrays identical to local | cache MiB |")
    print("|---|---:|---:|---:|---|---:|")
    print(f"| local (baseline) | {t_local:.1f} | {n / t_local:.0f} | 1.00 | - | {_du_mib(tmp / 'local'):.1f} |")
    print(f"| ray, excluding ray.init | {t_ray:.1f} | {n / t_ray:.0f} | {t_local / t_ray:.2f} | "
          f"{'yes' if same else 'NO'} (cache read back: {'yes' if cache_same else 'NO'}) | {_du_mib(tmp / 'ray'):.1f} |")
    print(f"| ray, including ray.init ({t_init:.1f} s) | {t_ray + t_init:.1f} | {n / (t_ray + t_init):.0f} | "
          f"{t_local / (t_ray + t_init):.2f} | | |")
    overhead = t_ray - (rfs.extra["decode_s"] + rfs.extra["model_s"]) / info["actors"]
    print(f"Ray actors were busy decoding or in the model {busy:.0%} of their wall time "
          f"(decode {rfs.extra['decode_s']:.1f} s, model {rfs.extra['model_s']:.1f} s summed over shards); "
          f"the rest, {overhead:.1f} s of wall time, is Ray overhead (actor start-up: importing faceaudit and "
          "onnxruntime, opening and hashing the model; scheduling; moving shards).")

    print(f"\n## Scaling on {m} faces ({args.cpus}-CPU Ray cluster on this machine)")
    print("| executor | actors | wall s | images/s | vs local | identical |\n|---|---:|---:|---:|---:|---|")
    for name, a, secs, fs in scaling:
        ident = all(np.array_equal(fs.features[k], base.features[k]) for k in layers)
        print(f"| {name} | {a} | {secs:.1f} | {m / secs:.0f} | {scaling[0][2] / secs:.2f} | {'yes' if ident else 'NO'} |")

    # -- projection -----------------------------------------------------------------------------------------
    g, cpg, gms = args.project_gpus, args.project_cpus_per_gpu, args.project_gpu_ms / 1e3
    per_actor = min(cpg / c_dec, 1 / gms) if gms > 0 else cpg / c_dec
    per_actor_raw = min(cpg / c_align, 1 / gms) if gms > 0 else cpg / c_align
    cpu_cores = g * cpg
    cpu_only = cpu_cores / (c_dec + c_model)
    N = args.project_images
    print(f"\n## Projection to a cluster ({N:,} images, ideal scaling from the per-image costs above)")
    print("| cluster | bound by | images/s | minutes for the set (+ Ray overhead measured here) |\n|---|---|---:|---:|")
    for label, rate, bound in [
        (f"{g} GPUs, {cpg} CPUs per GPU, aligned crops", g * per_actor,
         "decode" if cpg / c_dec < 1 / gms else "GPU"),
        (f"{g} GPUs, {cpg} CPUs per GPU, raw photos aligned on the fly", g * per_actor_raw,
         "decode + align" if cpg / c_align < 1 / gms else "GPU"),
        (f"{cpu_cores} CPU cores, no GPU, aligned crops", cpu_only, "CPU (decode + model)"),
    ]:
        if rate > 1 / c_write:
            rate, bound = 1 / c_write, "driver writing shards"
        print(f"| {label} | {bound} | {rate:,.0f} | {(N / rate + t_init + overhead) / 60:.1f} |")
    print(f"Assumptions: model time on one GPU {args.project_gpu_ms} ms/image (ASSUMED, not measured here); decode and "
          "model costs per core as measured above and scaling linearly with cores (one decode thread per CPU); images "
          f"on storage that keeps up; the driver keeps up with writing shards ({c_write * 1e3:.2f} ms per image); Ray "
          f"start-up and overhead as measured here (ray.init {t_init:.1f} s + {overhead:.1f} s) added once.")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same and cache_same else 1


if __name__ == "__main__":
    raise SystemExit(main())
