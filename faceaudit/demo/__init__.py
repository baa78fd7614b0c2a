"""Demo assets: a face phantom and a small face CNN trained on it, exported to ONNX.

`prepare_demo(out_dir)` makes everything `faceaudit demo` audits, with no
user files: it draws an audit set of phantom faces (images + manifest with
age, sex, skin tone, yaw and landmarks), draws a separate training set of
other phantom identities (kept in memory), trains `FaceCNN` on it for
identity, and exports the final network and checkpoints from along the
training (epoch 0 = random initialisation) to ONNX. The audit identities are
never seen in training, as in a real audit.

Assets are reused when `out_dir` already holds a complete set made with the
same settings: `demo_assets.json` is written last and atomically, so its
presence means everything it lists is there.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceaudit._atomic import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["DemoAssets", "DemoConfig", "prepare_demo"]

DONE_MARKER = "demo_assets.json"
ASSET_VERSION = 1  # bump when the phantom or the training recipe changes


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo: audit set, training set, training length."""

    audit_identities: int = 200
    audit_images_per_identity: int = 6
    train_identities: int = 300
    train_images_per_identity: int = 8  # one of them is held out for identification accuracy
    epochs: int = 8
    lr: float = 3e-3
    checkpoint_epochs: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8)
    size: int = 112
    embedding_dim: int = 128
    hard_group: str | None = "dark"
    hard_group_spread: float = 0.5

    @classmethod
    def preset(cls, quick: bool) -> DemoConfig:
        if quick:
            return cls(audit_identities=48, audit_images_per_identity=4, train_identities=100,
                       train_images_per_identity=5, epochs=4, checkpoint_epochs=(0, 2, 4))
        return cls()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint_epochs"] = list(self.checkpoint_epochs)
        return d


@dataclass(frozen=True)
class DemoAssets:
    """What `prepare_demo` made: the audit manifest, the final ONNX model, checkpoints, and figures."""

    manifest: Path
    model: Path
    checkpoints: list[tuple[str, Path]]  # (label, ONNX path), in training order; the last is `model`
    n_images: int  # images in the audit manifest
    n_identities: int  # identities in the audit manifest (none of them seen in training)
    train_seconds: float  # wall-clock seconds of training (without rendering and export)
    train_accuracy: float  # top-1 identification accuracy on held-out images of training identities
    verification_accuracy: float = float("nan")  # best-threshold accuracy on balanced audit-set pairs
    genuine_cosine: float = float("nan")  # mean cosine of same-identity audit pairs
    impostor_cosine: float = float("nan")  # mean cosine of different-identity audit pairs
    timings: dict[str, float] = field(default_factory=dict)  # seconds: generate, train_render, train, export
    reused: bool = False
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest), "model": str(self.model),
            "checkpoints": [[label, str(p)] for label, p in self.checkpoints],
            "n_images": self.n_images, "n_identities": self.n_identities,
            "train_seconds": self.train_seconds, "train_accuracy": self.train_accuracy,
            "verification_accuracy": self.verification_accuracy,
            "genuine_cosine": self.genuine_cosine, "impostor_cosine": self.impostor_cosine,
            "timings": dict(self.timings), "reused": self.reused, "notes": self.notes,
        }


def _derived_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, 0xD3E0, stream]).generate_state(1)[0])


def _notes(cfg: DemoConfig) -> str:
    hard = (f"Injected disparity: identities with skin_tone={cfg.hard_group} have their continuous "
            f"identity parameters (face proportions, features, skin lightness) drawn with {cfg.hard_group_spread:g} x the between-identity spread, so they are "
            "harder to tell apart (expect a higher false match rate for that group). "
            if cfg.hard_group else "No verification disparity was injected. ")
    return (
        "Phantom faces drawn by faceaudit.demo.phantom: age, sex, skin tone and yaw are set by the generator "
        "(ground truth, not estimates). Age changes eye size, face roundness, nose and lower-face length, "
        "wrinkles, grey hair; sex changes hair length, jaw width, brows, lips and beards (with overlap). "
        + hard
        + f"The face CNN was trained for identity on {cfg.train_identities} other phantom identities; "
        "the audited identities were never seen in training."
    )


def _reuse(out: Path, cfg: DemoConfig, seed: int) -> DemoAssets | None:
    marker = out / DONE_MARKER
    if not marker.is_file():
        return None
    try:
        d = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if d.get("asset_version") != ASSET_VERSION or d.get("seed") != seed or d.get("config") != cfg.to_dict():
        return None
    a = d["assets"]
    manifest = out / a["manifest"]
    model = out / a["model"]
    checkpoints = [(label, out / p) for label, p in a["checkpoints"]]
    if not (manifest.is_file() and model.is_file() and all(p.is_file() for _, p in checkpoints)):
        return None
    return DemoAssets(
        manifest=manifest, model=model, checkpoints=checkpoints, n_images=a["n_images"],
        n_identities=a["n_identities"], train_seconds=a["train_seconds"], train_accuracy=a["train_accuracy"],
        verification_accuracy=a["verification_accuracy"], genuine_cosine=a["genuine_cosine"],
        impostor_cosine=a["impostor_cosine"], timings=a["timings"], reused=True, notes=a["notes"],
    )


def _verification(emb: np.ndarray, ids: np.ndarray, seed: int) -> tuple[float, float, float]:
    """(best-threshold accuracy on balanced pairs, mean genuine cosine, mean impostor cosine)."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    iu = np.triu_indices(len(e), 1)
    sims = (e @ e.T)[iu]
    same = (ids[:, None] == ids[None, :])[iu]
    gen, imp = sims[same], sims[~same]
    if len(gen) == 0 or len(imp) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    imp_b = rng.choice(imp, size=len(gen), replace=len(imp) < len(gen))
    scores = np.concatenate([gen, imp_b])
    labels = np.concatenate([np.ones(len(gen)), np.zeros(len(imp_b))])
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(1 - labels[order])
    acc = (tp + (len(imp_b) - fp)) / len(scores)
    return float(max(acc.max(), 0.5)), float(gen.mean()), float(imp.mean())


def prepare_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    quick: bool = False,
    progress: bool | None = None,
    config: DemoConfig | None = None,
) -> DemoAssets:
    """Make (or reuse) the demo's phantom data set and trained face CNN in `out_dir`.

    Layout: `phantom/manifest.csv` + `phantom/images/`, `model/face_cnn.onnx`
    (the final network), `model/checkpoints/epoch_NN.onnx`, `model/training.json`
    (per-epoch loss and accuracy) and `demo_assets.json` (written last). The
    same seed gives the same images, labels and weights on CPU. `quick` uses
    a smaller preset (for tests); `progress` switches progress bars (None:
    on unless FACEAUDIT_NO_PROGRESS=1).
    """
    from faceaudit.demo.model import embed, export_onnx, train_face_model
    from faceaudit.demo.phantom import generate_phantom, render_phantom

    cfg = config or DemoConfig.preset(quick)
    out = Path(out_dir)
    reused = _reuse(out, cfg, seed)
    if reused is not None:
        log.info("demo assets reused from %s", out)
        return reused

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    manifest = generate_phantom(
        out / "phantom", n_identities=cfg.audit_identities, images_per_identity=cfg.audit_images_per_identity,
        size=cfg.size, seed=seed, identity_prefix="id", hard_group=cfg.hard_group,
        hard_group_spread=cfg.hard_group_spread, progress_enabled=progress,
    )
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    npi = cfg.train_images_per_identity
    train_faces = render_phantom(
        n_identities=cfg.train_identities, images_per_identity=npi, size=cfg.size,
        seed=_derived_seed(seed, 1), identity_prefix="train", hard_group=cfg.hard_group,
        hard_group_spread=cfg.hard_group_spread, progress_enabled=progress,
    )
    x = np.stack([f.image for f in train_faces])
    y = np.repeat(np.arange(cfg.train_identities), npi)
    held = (np.arange(len(x)) % npi) == npi - 1 if npi > 1 else np.zeros(len(x), bool)
    del train_faces
    timings["train_render"] = time.perf_counter() - t0

    model_dir = out / "model"
    ckpt_dir = model_dir / "checkpoints"
    checkpoints: list[tuple[str, Path]] = []
    export_s = [0.0]

    def _on_epoch(epoch: int, net: Any) -> None:
        if epoch in cfg.checkpoint_epochs and epoch != cfg.epochs:
            t = time.perf_counter()
            label = f"epoch_{epoch}"
            path = export_onnx(net, ckpt_dir / f"epoch_{epoch:02d}.onnx", label=label)
            checkpoints.append((label, path))
            export_s[0] += time.perf_counter() - t

    net, result = train_face_model(
        x[~held], y[~held], heldout_images=x[held] if held.any() else None,
        heldout_labels=y[held] if held.any() else None, epochs=cfg.epochs, lr=cfg.lr,
        embedding_dim=cfg.embedding_dim, seed=_derived_seed(seed, 2), on_epoch=_on_epoch,
        progress_enabled=progress,
    )
    timings["train"] = result.train_seconds - export_s[0]

    t = time.perf_counter()
    final = export_onnx(net, model_dir / "face_cnn.onnx", label=f"epoch_{cfg.epochs}")
    checkpoints.append((f"epoch_{cfg.epochs}", final))
    export_s[0] += time.perf_counter() - t
    timings["export"] = export_s[0]

    # verification on the (unseen) audit identities, straight from the files on disk
    from PIL import Image

    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    imgs = np.stack([np.asarray(Image.open(manifest.parent / r["path"]).convert("RGB")) for r in rows])
    ids = np.array([r["identity"] for r in rows])
    ver_acc, gen_cos, imp_cos = _verification(embed(net, imgs), ids, seed)
    train_acc = float(result.heldout_accuracy) if result.heldout_accuracy is not None else float("nan")

    atomic_write_text(model_dir / "training.json", json.dumps(
        {"config": cfg.to_dict(), "seed": seed, **result.to_dict()}, indent=2))

    assets = DemoAssets(
        manifest=manifest, model=final, checkpoints=checkpoints, n_images=len(rows),
        n_identities=len(set(ids.tolist())), train_seconds=round(timings["train"], 3),
        train_accuracy=train_acc, verification_accuracy=ver_acc, genuine_cosine=gen_cos,
        impostor_cosine=imp_cos, timings={k: round(v, 3) for k, v in timings.items()},
        reused=False, notes=_notes(cfg),
    )
    rel = assets.to_dict()
    rel["manifest"] = str(manifest.relative_to(out))
    rel["model"] = str(final.relative_to(out))
    rel["checkpoints"] = [[label, str(p.relative_to(out))] for label, p in checkpoints]
    atomic_write_text(out / DONE_MARKER, json.dumps(
        {"asset_version": ASSET_VERSION, "seed": seed, "config": cfg.to_dict(), "assets": rel}, indent=2))
    log.info("demo assets ready in %s: %s", out, {k: v for k, v in rel.items() if k != "notes"})
    return assets
