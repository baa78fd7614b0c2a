"""Real-data verification fairness: LFW by sex and FG-NET by age band with the bundled MobileFaceNet.

Run: python benchmarks/bench_fairness_real.py [--data ../shared/data] [--target-fmr 1e-3]
Prints per-group FMR/FNMR with identity-bootstrap 95% CIs from faceaudit, beside a baseline computed
independently in this script from the full similarity matrix (all pairs, same threshold rule).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from faceaudit.data import load_manifest
from faceaudit.fairness import verification_fairness

REPO = Path(__file__).resolve().parents[1]


def embed(model: Path, paths: list[Path]) -> np.ndarray:
    """onnxruntime on aligned 112x112 crops: RGB, (x - 127.5) / 127.5, NCHW; L2-normalised."""
    import onnxruntime as ort
    from PIL import Image

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = []
    for s in range(0, len(paths), 128):
        b = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths[s : s + 128]])
        out.append(sess.run(None, {name: np.ascontiguousarray(((b - 127.5) / 127.5).transpose(0, 3, 1, 2))})[0])
    e = np.concatenate(out).astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def baseline(emb: np.ndarray, ids: np.ndarray, groups: np.ndarray, target: float) -> tuple[float, dict]:
    s = emb @ emb.T
    iu, ju = np.triu_indices(len(ids), 1)
    sc, gen = s[iu, ju], ids[iu] == ids[ju]
    imp = np.sort(sc[~gen])[::-1]
    kth = imp[int(np.floor(target * imp.size + 1e-9))]
    match = sc > kth
    out = {}
    for g in {x for x in groups if x is not None}:
        both = (groups[iu] == g) & (groups[ju] == g)
        out[g] = (match[both & ~gen].mean() if (both & ~gen).any() else float("nan"),
                  (~match[both & gen]).mean() if (both & gen).any() else float("nan"))
    return float(kth), out


def report(title: str, emb: np.ndarray, ids: np.ndarray, attr, target: float, n_pairs_all: int, **options) -> None:
    t = time.perf_counter()
    r = verification_fairness(emb, ids, attr, target_fmr=target, seed=0, threshold_pairs=n_pairs_all, **options)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    kth, ref = baseline(emb, ids, attr.groups, target)
    dtb = time.perf_counter() - t
    print(f"\n## {title}: {r.n_images} images, {r.n_identities} identities, threshold {r.threshold:.4f} "
          f"(baseline: > {kth:.4f}); faceaudit {dt:.1f} s, baseline {dtb:.1f} s")
    print(f"{'group':<14}{'ids':>5}{'imgs':>6}{'gen':>7}{'imp':>9}  {'FNMR [95% CI]':<26}{'base FNMR':>10}  "
          f"{'FMR [95% CI]':<30}{'base FMR':>10}  small")
    for g in r.groups:
        bf, bn = ref[g.group]
        fn = "-" if g.fnmr is None else f"{g.fnmr:.4f} [{g.fnmr_ci[0]:.4f}, {g.fnmr_ci[1]:.4f}]"
        fm = "-" if g.fmr is None else f"{g.fmr:.5f} [{g.fmr_ci[0]:.5f}, {g.fmr_ci[1]:.5f}]"
        print(f"{g.group:<14}{g.n_identities:>5}{g.n_images:>6}{g.n_genuine_pairs:>7}{g.n_impostor_pairs:>9}  "
              f"{fn:<26}{bn:>10.4f}  {fm:<30}{bf:>10.5f}  {g.small}")
    d = r.to_dict()
    s = d["summary"]
    print(f"FNMR max/min {d['disparities']['fnmr']['max_min_ratio']}, FMR max/min {d['disparities']['fmr']['max_min_ratio']}; "
          f"FDR {s['fdr']}, IR {s['inequity_rate']}, GARBE {s['garbe']} (CI {s.get('garbe_ci')})")
    for w in d["warnings"]:
        print("warning:", w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEAUDIT_SHARED_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--target-fmr", type=float, default=1e-3)
    a = ap.parse_args()
    model = a.data / "models" / "mobilefacenet.onnx"
    lfw = load_manifest(a.data / "lfw" / "manifest.csv", "sex", require_identity=True)
    t = time.perf_counter()
    e = embed(model, lfw.paths)
    print(f"LFW embeddings: {len(e)} images in {time.perf_counter() - t:.1f} s")
    n = len(e)
    report("LFW by sex", e, lfw.identities, lfw.attributes["sex"], a.target_fmr, n * (n - 1) // 2)
    report("LFW by sex, at most 50 genuine pairs per identity (baseline: all pairs)", e, lfw.identities,
           lfw.attributes["sex"], a.target_fmr, n * (n - 1) // 2, max_genuine_pairs_per_identity=50)
    fg = load_manifest(a.data / "fgnet" / "manifest.csv", "age", require_identity=True)
    e = embed(model, fg.paths)
    n = len(e)
    report("FG-NET by age band", e, fg.identities, fg.attributes["age"], a.target_fmr, n * (n - 1) // 2)


if __name__ == "__main__":
    main()
