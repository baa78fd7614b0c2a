"""Synthetic report dicts for the report tests (and sanity checks of the builders themselves).

The numbers follow the shapes the other rooms produce (CONTRACTS.md): 5 layers x 3
attributes of expressivity entries and two fairness attributes, with a known
injected disparity (female FNMR 2.3x male, CIs separated) so findings can be
checked against a known answer.
"""

from __future__ import annotations

import copy
import math
from typing import Any

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"

LAYERS = ["input", "stage1.conv", "stage2.block3", "stage4.block2", "embedding"]


def _expr(layer: str, attr: str, kind: str, mi: float, null: float, h: float | None, n: int) -> dict[str, Any]:
    half = 0.02 + 0.05 * mi
    norm = mi / h if h else 1.0 - math.exp(-2.0 * mi)
    return {
        "layer": layer,
        "attribute": attr,
        "mi": round(mi, 4),
        "ci_low": round(max(0.0, mi - half), 4),
        "ci_high": round(mi + half, 4),
        "null_mi": round(null, 4),
        "null_ci_high": round(null + 0.01, 4),
        "normalized": round(min(1.0, norm), 4),
        "n": n,
        "estimator": "mine",
        "kind": kind,
        "warnings": [],
        "raw_mi": round(mi + 0.01, 4),
        "seeds_mi": [round(mi - 0.01, 4), round(mi, 4), round(mi + 0.01, 4)],
        "entropy_y": h,
        "reduced_dim": 64,
        "curves": {"step": [0, 100, 200], "train": [0.0, mi * 0.8, mi * 1.1], "heldout": [0.0, mi * 0.7, mi]},
    }


def _fair(attr: str, groups: list[tuple[str, int, float, float]], target: float = 1e-3) -> dict[str, Any]:
    rows = []
    for name, n_id, fmr, fnmr in groups:
        rows.append(
            {
                "group": name,
                "n_identities": n_id,
                "n_images": n_id * 6,
                "n_genuine_pairs": n_id * 15,
                "n_impostor_pairs": n_id * 2000,
                "fmr": fmr,
                "fmr_ci": [fmr * 0.85, fmr * 1.15],
                "fnmr": fnmr,
                "fnmr_ci": [fnmr * 0.88, fnmr * 1.12],
                "small": n_id < 20,
            }
        )

    def disp(metric: str) -> dict[str, Any]:
        vals = {r["group"]: r[metric] for r in rows}
        worst = max(vals, key=vals.get)  # type: ignore[arg-type]
        best = min(vals, key=vals.get)  # type: ignore[arg-type]
        return {
            "max_min_ratio": vals[worst] / vals[best],
            "difference": vals[worst] - vals[best],
            "worst_group": worst,
            "best_group": best,
            "ratio_to_best": {g: v / vals[best] for g, v in vals.items()},
        }

    names = [g[0] for g in groups]
    matrix = [[(fa[2] if a == b else fa[2] * fb[2] * 50) for b, fb in zip(names, groups)] for a, fa in zip(names, groups)]
    matrix[0][-1] = 0.0
    return {
        "attribute": attr,
        "target_fmr": target,
        "threshold": 0.3512,
        "n_identities": sum(g[1] for g in groups),
        "n_images": sum(g[1] * 6 for g in groups),
        "n_genuine_pairs": sum(g[1] * 15 for g in groups),
        "n_impostor_pairs": sum(g[1] * 2000 for g in groups),
        "groups": rows,
        "disparities": {"fmr": disp("fmr"), "fnmr": disp("fnmr")},
        "summary": {"fdr": 0.91, "inequity_rate": 3.1, "garbe_fmr": 0.12, "garbe_fnmr": 0.18, "alpha": 0.5},
        "cross_group_fmr": {"groups": names, "matrix": matrix, "pairs": [[1000] * len(names)] * len(names)},
        "warnings": [],
        "settings": {"bootstrap": 200},
    }


def full_report() -> dict[str, Any]:
    """A realistic full report: 5 layers x 3 attributes (sex, race, yaw), fairness for sex and race."""
    n = 3000
    h_sex = 0.6881
    h_race = 1.4213
    mi_sex = [0.02, 0.12, 0.25, 0.38, 0.41]
    mi_race = [0.05, 0.15, 0.22, 0.30, 0.26]
    mi_yaw = [0.003, 0.02, 0.015, 0.01, 0.004]
    expr = []
    for i, layer in enumerate(LAYERS):
        expr.append(_expr(layer, "sex", "categorical", mi_sex[i], 0.004, h_sex, n))
        expr.append(_expr(layer, "race", "categorical", mi_race[i], 0.006, h_race, n))
        e = _expr(layer, "yaw", "continuous", mi_yaw[i], 0.008, None, n - 12)
        expr.append(e)
    layers = [
        {"name": name, "dim": d, "kind": k, "shape": s, "depth": round(i / 4, 2)}
        for i, (name, d, k, s) in enumerate(
            [
                ("input", 3, "Input", [1, 3, 112, 112]),
                ("stage1.conv", 64, "Conv", [1, 64, 56, 56]),
                ("stage2.block3", 128, "Conv", [1, 128, 14, 14]),
                ("stage4.block2", 256, "Conv", [1, 256, 7, 7]),
                ("embedding", 128, "Gemm", [1, 128]),
            ]
        )
    ]
    return {
        "schema_version": "1.0",
        "kind": "audit",
        "faceaudit_version": "0.1.0",
        "created": "2026-11-28T01:00:00+00:00",
        "demo": False,
        "model": {
            "path": "models/mobilefacenet.onnx",
            "sha256": "ab" * 32,
            "backend": "onnx",
            "input": {"height": 112, "width": 112, "layout": "NCHW", "channel_order": "RGB", "mean": 127.5, "std": 127.5},
        },
        "data": {
            "manifest": "data/utkface/manifest.csv",
            "n_images": 3002,
            "n_used": 3000,
            "n_failed": 2,
            "failed": [
                {"path": "aligned/utk_00017.jpg", "reason": "cannot decode image"},
                {"path": "aligned/utk_00231.jpg", "reason": "file not found"},
            ],
            "attributes": [
                {"name": "sex", "kind": "categorical", "n_valid": 3000, "n_missing": 0,
                 "groups": [{"label": "female", "count": 1658}, {"label": "male", "count": 1342}]},
                {"name": "race", "kind": "categorical", "n_valid": 3000, "n_missing": 0,
                 "groups": [{"label": g, "count": c} for g, c in
                            [("asian", 496), ("black", 132), ("indian", 407), ("other", 338), ("white", 1627)]]},
                {"name": "yaw", "kind": "continuous", "n_valid": 2988, "n_missing": 12,
                 "groups": [{"label": "left", "count": 700}, {"label": "frontal", "count": 1600},
                            {"label": "right", "count": 688}]},
            ],  # fmt: skip
        },
        "layers": layers,
        "expressivity": expr,
        "fairness": [
            _fair("sex", [("female", 221, 1.1e-3, 0.046), ("male", 618, 0.9e-3, 0.020)]),
            _fair(
                "race",
                [("asian", 60, 1.6e-3, 0.031), ("black", 15, 2.4e-3, 0.034), ("white", 700, 0.95e-3, 0.029)],
            ),
        ],
        "fairness_skipped_reason": None,
        "warnings": ["2 images could not be used (see Run metadata)."],
        "timings": {"load_s": 1.2, "features_s": 30.5, "expressivity_s": 120.25, "fairness_s": 4.0, "report_s": 0.3,
                    "total_s": 156.25},  # fmt: skip
        "settings": {"attrs": ["sex", "race", "yaw"], "layers_spec": "auto", "estimator": "mine", "seeds": 3,
                     "device": "cpu", "target_fmr": 1e-3, "pooling": "avg", "max_dim": 64, "seed": 0, "quick": False},
        "environment": {"python": "3.11.7", "platform": "Linux-x86_64", "numpy": "1.26.4", "torch": "2.3.0",
                        "onnxruntime": "1.18.0", "fairlearn": "0.10.0"},
    }  # fmt: skip


def no_fairness_report() -> dict[str, Any]:
    """The full report without fairness (the manifest had no identity column)."""
    r = full_report()
    r["fairness"] = None
    r["fairness_skipped_reason"] = "the manifest has no identity column, so genuine pairs cannot be formed."
    return r


def warning_heavy_report() -> dict[str, Any]:
    """Many warnings everywhere, a NaN-like failed estimate (None), and a group with no false matches."""
    r = full_report()
    for i, e in enumerate(r["expressivity"]):
        e["warnings"] = [f"held-out MI below training MI by {0.1 * (i % 4):.1f} nats (overfitting?)"]
        if i % 5 == 0:
            e["warnings"].append("estimate did not converge in 2000 steps")
    bad = r["expressivity"][2]
    bad.update({"mi": None, "ci_low": None, "ci_high": None, "normalized": None})
    r["warnings"] += [f"run warning {k}" for k in range(12)]
    f = r["fairness"][1]
    f["groups"][1]["fmr"] = 0.0
    f["groups"][1]["fmr_ci"] = [0.0, 0.004]
    f["disparities"]["fmr"]["max_min_ratio"] = None
    f["disparities"]["fmr"]["best_group"] = "black"
    f["disparities"]["fmr"]["worst_group"] = "asian"
    f["warnings"] = ["group 'black' has only 15 identities"]
    r["data"]["n_failed"] = 400
    return r


def xss_report() -> dict[str, Any]:
    """Hostile labels everywhere a user's text can reach the report."""
    r = full_report()
    bad = XSS_SCRIPT + XSS_IMG
    r["model"]["path"] = f"models/{XSS_SCRIPT}.onnx"
    r["data"]["manifest"] = f"{XSS_IMG}/manifest.csv"
    r["data"]["failed"][0]["path"] = f"aligned/{XSS_SCRIPT}.jpg"
    r["data"]["attributes"][0]["name"] = bad
    r["data"]["attributes"][0]["groups"][0]["label"] = XSS_IMG
    r["layers"][2]["name"] = f"stage2{XSS_SCRIPT}"
    for e in r["expressivity"]:
        if e["attribute"] == "sex":
            e["attribute"] = bad
        if e["layer"] == "stage2.block3":
            e["layer"] = f"stage2{XSS_SCRIPT}"
    f = r["fairness"][0]
    f["attribute"] = bad
    f["groups"][0]["group"] = XSS_IMG
    f["groups"][1]["group"] = XSS_SCRIPT
    f["disparities"] = {}
    f["cross_group_fmr"]["groups"] = [XSS_IMG, XSS_SCRIPT]
    r["warnings"].append(bad)
    r["settings"]["layers_spec"] = bad
    return r


def test_builders_are_independent_and_consistent() -> None:
    a, b = full_report(), full_report()
    a["expressivity"][0]["mi"] = 99.0
    assert b["expressivity"][0]["mi"] != 99.0
    assert len(b["expressivity"]) == 5 * 3
    assert {e["layer"] for e in b["expressivity"]} == set(LAYERS)
    assert copy.deepcopy(no_fairness_report())["fairness"] is None
    sex = b["fairness"][0]["disparities"]["fnmr"]
    assert sex["worst_group"] == "female" and abs(sex["max_min_ratio"] - 2.3) < 1e-9
