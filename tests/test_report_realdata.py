"""A report built from real faces: LFW through MobileFaceNet, verification fairness by sex.

The numbers come from the real data and the real fairness room (not from this
test); the test checks that the report layer carries them faithfully into
report.json and the HTML (same group labels, same rates, findings that agree
with the disparity the fairness room measured).
"""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from faceaudit.report import AuditResult, compute_findings, load_report, render_html, write_report
from faceaudit.report.findings import DEFAULT_TOLERANCE_RATIO

pytestmark = pytest.mark.realdata


def test_real_lfw_fairness_report(shared_data: Path, mobilefacenet: Path, embed_bundle, tmp_path: Path) -> None:
    from faceaudit.data import load_manifest
    from faceaudit.fairness import verification_fairness

    manifest = load_manifest(shared_data / "lfw" / "manifest.csv", "sex", require_identity=True)
    ids = np.asarray(manifest.identities, dtype=object)
    rng = np.random.default_rng(0)
    names = np.unique(ids)
    rng.shuffle(names)
    keep: list[int] = []
    for name in names:  # up to 4 images of each identity until ~360 images
        keep += list(np.flatnonzero(ids == name)[:4])
        if len(keep) >= 360:
            break
    keep_a = np.array(sorted(keep))
    sex = manifest.attributes["sex"]
    emb = embed_bundle([manifest.paths[i] for i in keep_a])
    fair = verification_fairness(
        emb, ids[keep_a], sex.groups[keep_a], target_fmr=1e-2, seed=0, attribute="sex", n_bootstrap=50
    ).to_dict()

    counts = {g: int(np.sum(sex.groups[keep_a] == g)) for g in sex.group_order}
    report = {
        "schema_version": "1.0",
        "kind": "audit",
        "faceaudit_version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "demo": False,
        "model": {
            "path": mobilefacenet.name,
            "sha256": hashlib.sha256(mobilefacenet.read_bytes()).hexdigest(),
            "backend": "onnx",
            "input": {"height": 112, "width": 112, "layout": "NCHW", "channel_order": "RGB", "mean": 127.5, "std": 127.5},
        },
        "data": {
            "manifest": "lfw/manifest.csv",
            "n_images": len(manifest),
            "n_used": len(keep_a),
            "n_failed": 0,
            "failed": [],
            "attributes": [
                {"name": "sex", "kind": sex.kind, "n_valid": len(keep_a), "n_missing": 0,
                 "groups": [{"label": g, "count": c} for g, c in counts.items()]}
            ],  # fmt: skip
        },
        "layers": [{"name": "embedding", "dim": int(emb.shape[1]), "kind": "output", "shape": [1, int(emb.shape[1])],
                    "depth": 1.0}],  # fmt: skip
        "expressivity": [],
        "fairness": [fair],
        "fairness_skipped_reason": None,
        "warnings": [],
        "timings": {},
        "settings": {"target_fmr": 1e-2, "seed": 0},
        "environment": {},
    }
    html_path, json_path = write_report(report, tmp_path)
    loaded = load_report(json_path)
    assert loaded == AuditResult.from_dict(report)
    assert html_path.read_text(encoding="utf-8") == render_html(loaded)

    stored = json.loads(json_path.read_text(encoding="utf-8"))["fairness"][0]
    assert [g["group"] for g in stored["groups"]] == [g["group"] for g in fair["groups"]]
    for a, b in zip(stored["groups"], fair["groups"]):
        assert a["fmr"] == pytest.approx(b["fmr"]) and a["fnmr"] == pytest.approx(b["fnmr"])

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    p = _Text()
    p.feed(html_path.read_text(encoding="utf-8"))
    text = " ".join(p.parts)
    assert report["model"]["sha256"] in text
    for g, c in counts.items():
        assert f"{g} ({c})" in text

    # The findings agree with the disparity the fairness room measured.
    d = fair["disparities"]["fnmr"]
    texts = [f.text for f in compute_findings(loaded)]
    if d["max_min_ratio"] is not None and d["max_min_ratio"] > DEFAULT_TOLERANCE_RATIO:
        assert any(t.startswith(f"FNMR for {d['worst_group']} is") for t in texts)
    else:
        assert any("FNMR (max ratio" in t for t in texts)
