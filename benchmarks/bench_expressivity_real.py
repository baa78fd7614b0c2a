"""Expressivity of MobileFaceNet embeddings on the bundle's UTKFace and LFW sets: estimate, interval, probe floor
and permutation null for every attribute, with all rows and with a 600-row subsample.

Run: python benchmarks/bench_expressivity_real.py [--data DIR] [--rows 600]

DIR is the real face-data bundle (default: $FACEAUDIT_SHARED_DATA, else ../shared/data beside the project).
The embeddings come from a plain onnxruntime pipeline (aligned 112x112 RGB crops, (x - 127.5) / 127.5), as in
tests/test_expressivity_realdata.py, and the estimates from `estimate_many(..., seed=0, workers=2)` with
torch on one thread per stack; the subsample is `np.random.default_rng(1).permutation(n)[:rows]`, sorted.
Prints one line per (set, rows, attribute) and a summary of the targets: the interval reaches the floor,
the null is within 0.05 nats of 0, and the half-width at the subsample is at most 0.12 nats.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from faceaudit.data import load_manifest
from faceaudit.expressivity import estimate_many

SETS = {"utkface": ("age", "sex", "race", "yaw"), "lfw": ("sex", "yaw")}


def embed(model: Path, paths: list[Path]) -> np.ndarray:
    import onnxruntime as ort
    from PIL import Image

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for s in range(0, len(paths), 64):
        batch = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths[s : s + 64]])
        x = np.ascontiguousarray(((batch - 127.5) / 127.5).transpose(0, 3, 1, 2))
        out.append(sess.run(None, {name: x})[0].astype(np.float32))
    return np.concatenate(out)


def load(data: Path, name: str, attrs: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """A set's embeddings and attributes, read with faceaudit's own manifest loader."""
    m = load_manifest(data / name / "manifest.csv", ",".join(attrs))
    emb = embed(data / "models" / "mobilefacenet.onnx", m.paths)
    return emb, {a: (m.attributes[a].values, m.attributes[a].kind) for a in attrs}


def main() -> None:
    default = os.environ.get("FACEAUDIT_SHARED_DATA") or str(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default, help="the real face-data bundle's folder")
    ap.add_argument("--rows", type=int, default=600, help="size of the subsample (default 600)")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "models" / "mobilefacenet.onnx").is_file():
        raise SystemExit(f"no face-data bundle at {data}: pass --data DIR or set FACEAUDIT_SHARED_DATA")
    torch.set_num_threads(1)
    print(f"{'set':8s} {'rows':>5s} {'attr':5s} {'mi':>6s} {'95% CI':>16s} {'half':>5s} {'floor':>6s} {'null':>7s}")
    misses = []
    t_start = time.time()
    for name, attrs in SETS.items():
        emb, values = load(data, name, attrs)
        for n_rows in (None, args.rows):
            rows = np.arange(len(emb))
            if n_rows is not None:
                rows = np.sort(np.random.default_rng(1).permutation(len(emb))[:n_rows])
            res = estimate_many({"embedding": emb[rows]}, {a: (v[rows], k) for a, (v, k) in values.items()},
                                progress=False, seed=0, workers=2)
            for a in attrs:
                r = res[("embedding", a)]
                half = (r.ci_high - r.ci_low) / 2
                print(f"{name:8s} {r.n:5d} {a:5s} {r.mi:6.3f} [{r.ci_low:6.3f}, {r.ci_high:6.3f}] {half:5.3f} "
                      f"{r.probe_mi:6.3f} {r.null_mi:+7.3f}", flush=True)
                if r.ci_high < r.probe_mi:
                    misses.append(f"{name} {a} n={r.n}: interval below the floor")
                if abs(r.null_mi) > 0.05:
                    misses.append(f"{name} {a} n={r.n}: null {r.null_mi:+.3f}")
                if n_rows is not None and half > 0.12:
                    misses.append(f"{name} {a} n={r.n}: half-width {half:.3f} > 0.12")
    print(f"targets missed: {len(misses)}" + "".join(f"\n  {m}" for m in misses))
    print(f"wall time {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
