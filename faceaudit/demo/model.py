"""A small face-recognition CNN for the demo: build, train for identity, export to ONNX.

The network is shaped like the face embedders faceaudit audits in practice
(a convolutional trunk, a global depthwise "GDC" pooling as in MobileFaceNet,
a linear embedding with batch normalisation), only much smaller, so that it
trains on the phantom in seconds on a CPU. It is trained as a classifier over
the training identities with a CosFace margin (additive cosine margin on the
normalised embedding), the standard recipe for face embedders; only the
embedding part is exported.

Modules carry their own names (`stem`, `stage1`, `stage2`, `stage3`, `pool`,
`embedding`), and so do the ONNX nodes exported from them (e.g.
`/stage2/relu2/Relu`), which is what `faceaudit layers` lists.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faceaudit._atomic import atomic_write_bytes
from faceaudit._progress import progress
from faceaudit.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "INPUT_MEAN",
    "INPUT_STD",
    "FaceCNN",
    "TrainResult",
    "embed",
    "export_onnx",
    "input_spec",
    "train_face_model",
]

INPUT_MEAN = 127.5
INPUT_STD = 127.5
ONNX_OPSET = 17


def _cbr(cin: int, cout: int, stride: int, i: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"conv{i}", nn.Conv2d(cin, cout, 3, stride, 1, bias=False)),
        (f"bn{i}", nn.BatchNorm2d(cout)),
        (f"relu{i}", nn.ReLU(inplace=True)),
    ]


class FaceCNN(nn.Module):
    """A small face embedder: input (N, 3, size, size) normalised RGB -> (N, embedding_dim).

    stem (3x3 stride-2 conv + max pool, /4) -> stage1..stage3 (two 3x3 convs
    each, the first with stride 2) -> pool (global depthwise conv over the
    final map, MobileFaceNet's GDC) -> embedding (linear + batch norm).
    """

    def __init__(self, size: int = 112, embedding_dim: int = 128,
                 channels: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if size < 32:
            raise InputError(f"FaceCNN needs an input of at least 32 pixels, got size={size}.")
        c0, c1, c2, c3 = channels
        self.size = size
        self.embedding_dim = embedding_dim
        self.stem = nn.Sequential(OrderedDict([*_cbr(3, c0, 2, 1), ("maxpool", nn.MaxPool2d(2))]))
        self.stage1 = nn.Sequential(OrderedDict([*_cbr(c0, c1, 2, 1), *_cbr(c1, c1, 1, 2)]))
        self.stage2 = nn.Sequential(OrderedDict([*_cbr(c1, c2, 2, 1), *_cbr(c2, c2, 1, 2)]))
        self.stage3 = nn.Sequential(OrderedDict([*_cbr(c2, c3, 2, 1), *_cbr(c3, c3, 1, 2)]))
        final = size // 2 // 2
        for _ in range(3):
            final = (final - 1) // 2 + 1
        self.pool = nn.Sequential(OrderedDict([
            ("gdc", nn.Conv2d(c3, c3, final, groups=c3, bias=False)),
            ("bn", nn.BatchNorm2d(c3)),
            ("flatten", nn.Flatten()),
        ]))
        self.embedding = nn.Sequential(OrderedDict([
            ("fc", nn.Linear(c3, embedding_dim, bias=False)),
            ("bn", nn.BatchNorm1d(embedding_dim)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.pool(x)
        return self.embedding(x)


class _CosFaceHead(nn.Module):
    """CosFace logits s * (cos(theta_y) - m) for the target class, s * cos(theta) otherwise."""

    def __init__(self, dim: int, n_classes: int, scale: float = 24.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.linear(F.normalize(emb), F.normalize(self.weight))
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.scale * cos


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) with (pixel - 127.5) / 127.5."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (t - INPUT_MEAN) / INPUT_STD


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of identity training: per-epoch history and held-out identification accuracy."""

    epochs: int
    train_seconds: float
    heldout_accuracy: float | None  # top-1 identification on held-out images of training identities
    history: list[dict] = field(default_factory=list)  # {"epoch", "loss", "train_accuracy", "heldout_accuracy"}

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "train_seconds": self.train_seconds,
                "heldout_accuracy": self.heldout_accuracy, "history": list(self.history)}


@torch.no_grad()
def embed(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of uint8 RGB images (N, H, W, 3) in eval mode."""
    was = model.training
    model.eval()
    out = [model(to_input(images[i:i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    model.train(was)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def _accuracy(model: nn.Module, head: _CosFaceHead, images: np.ndarray, labels: np.ndarray) -> float:
    if len(images) == 0:
        return float("nan")
    emb = torch.from_numpy(embed(model, images))
    pred = head(emb).argmax(1).numpy()
    return float((pred == labels).mean())


def train_face_model(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    heldout_images: np.ndarray | None = None,
    heldout_labels: np.ndarray | None = None,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    embedding_dim: int = 128,
    seed: int = 0,
    on_epoch: Callable[[int, FaceCNN], None] | None = None,
    progress_enabled: bool | None = None,
) -> tuple[FaceCNN, TrainResult]:
    """Train a `FaceCNN` to tell the identities in `labels` apart; deterministic on CPU for a seed.

    `images` are uint8 RGB (N, H, W, 3) square crops, `labels` integer ids in
    0..K-1. AdamW with warm-up and cosine learning-rate decay and a CosFace head.
    `on_epoch(epoch, model)` is called with epoch 0 before any training (the
    random initialisation) and after every epoch, so checkpoints can be kept.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise InputError(f"images must be uint8 (N, S, S, 3), got {images.dtype} {images.shape}.")
    if labels.shape != (len(images),) or len(images) == 0:
        raise InputError(f"labels must have shape ({len(images)},), got {labels.shape}.")
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, got {epochs}.")
    n_classes = int(labels.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    history: list[dict] = []
    # the global torch RNG (weight initialisation) is forked, so the caller's random state is untouched
    with _deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FaceCNN(size=images.shape[1], embedding_dim=embedding_dim)
        head = _CosFaceHead(embedding_dim, n_classes)
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
        steps_per_epoch = math.ceil(len(images) / batch_size)
        total = epochs * steps_per_epoch
        warm = max(1, int(0.15 * total))

        def _lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor)
        x_all = to_input(images)
        y_all = torch.from_numpy(labels)
        if on_epoch is not None:
            on_epoch(0, model)
        bar = progress(total=epochs * steps_per_epoch, desc="training face CNN", unit="step",
                       enabled=progress_enabled)
        try:
            for epoch in range(1, epochs + 1):
                model.train()
                head.train()
                order = torch.randperm(len(images), generator=gen)
                tot_loss, tot_ok, seen = 0.0, 0, 0
                for s in range(steps_per_epoch):
                    idx = order[s * batch_size:(s + 1) * batch_size]
                    if len(idx) < 2:  # BatchNorm needs 2 samples
                        continue
                    x, y = x_all[idx], y_all[idx]
                    logits = head(model(x), y)
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    tot_loss += float(loss.detach()) * len(idx)
                    tot_ok += int((logits.argmax(1) == y).sum())
                    seen += len(idx)
                    bar.update(1)
                rec = {"epoch": epoch, "loss": tot_loss / max(seen, 1), "train_accuracy": tot_ok / max(seen, 1)}
                if heldout_images is not None and heldout_labels is not None:
                    head.eval()
                    rec["heldout_accuracy"] = _accuracy(model, head, heldout_images, np.asarray(heldout_labels))
                history.append(rec)
                log.info("epoch %d: %s", epoch, rec)
                model.eval()
                if on_epoch is not None:
                    on_epoch(epoch, model)
        finally:
            bar.close()
    model.eval()
    held = history[-1].get("heldout_accuracy") if history else None
    return model, TrainResult(epochs=epochs, train_seconds=time.perf_counter() - t0,
                              heldout_accuracy=held, history=history)


def input_spec(size: int) -> dict:
    """The preprocessing the demo model expects, as stored in its ONNX metadata."""
    return {"height": size, "width": size, "layout": "NCHW", "channel_order": "RGB",
            "mean": INPUT_MEAN, "std": INPUT_STD}


def export_onnx(model: FaceCNN, path: str | Path, *, label: str = "final",
                extra_metadata: dict[str, str] | None = None) -> Path:
    """Export the embedder to ONNX (opset 17, dynamic batch, input `input`, output `embedding`).

    The file carries metadata_props `faceaudit.input_spec` (JSON: height,
    width, layout, channel_order, mean, std), so the ONNX backend needs no
    preprocessing options, and `faceaudit.checkpoint` = `label`. Written
    atomically.
    """
    import onnx

    model.eval()
    size = model.size
    dummy = torch.zeros(2, 3, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), buf, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["input"], output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
            do_constant_folding=True,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"faceaudit.input_spec": json.dumps(input_spec(size), sort_keys=True),
            "faceaudit.checkpoint": label, **(extra_metadata or {})}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "faceaudit demo face CNN (trained on the phantom)"
    target = Path(path)
    atomic_write_bytes(target, proto.SerializeToString())
    return target
