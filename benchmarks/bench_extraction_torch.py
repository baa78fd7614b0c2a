"""PyTorch-backend throughput: faceaudit's hooked extraction against a plain forward pass, same batches.

Run:  python benchmarks/bench_extraction_torch.py [--model torchvision.models:resnet50] [--images 512] [--batch 64]

Builds the network from an installed factory (default: torchvision ResNet-50 when torchvision is installed,
else a small built-in CNN), saves its state dict, opens it with `open_model(..., factory=...)` and times, in
one run on the same random batches (seed 0): a plain `model(x)` under inference mode (baseline), faceaudit
final-layer-only extraction, and faceaudit 5-layer (auto) extraction. On a GPU it also compares the GPU
features with CPU features of the same model (cosine). Prints a table; never fails on timing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*[m for c in (32, 64, 128, 256) for m in
                                        (nn.LazyConv2d(c, 3, stride=2, padding=1), nn.ReLU())])
        self.head = nn.Linear(256, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def small_cnn() -> nn.Module:
    m = _SmallCNN()
    m(torch.zeros(1, 3, 112, 112))
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="auto", help="package.module:function, or auto")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from faceaudit.backends import open_model, select_layers
    from faceaudit.backends.torch_backend import _resolve_factory

    spec = args.model
    if spec == "auto":
        try:
            import torchvision  # noqa: F401

            spec = "torchvision.models:resnet50"
        except ImportError:
            spec = None
    factory = _resolve_factory(spec, Path("bench")) if spec else small_cnn
    torch.manual_seed(0)
    net = factory().eval()
    with tempfile.TemporaryDirectory() as tmp:
        wpath = Path(tmp) / "weights.pth"
        torch.save(net.state_dict(), wpath)
        model = open_model(wpath, factory=factory, height=args.size, width=args.size)
        dev = torch.device(model.device)
        plain = net.to(dev)
        auto = select_layers(model, "auto")
        rng = np.random.default_rng(0)
        batches = [rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
                   for _ in range(max(1, args.images // args.batch))]
        n = args.batch * len(batches)

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def run_plain() -> None:
            with torch.inference_mode():
                for b in batches:
                    plain(torch.from_numpy(b).to(dev)).cpu().numpy()

        def run_final() -> None:
            for b in batches:
                model.extract(b, [model.final_layer])

        def run_auto() -> None:
            for b in batches:
                model.extract(b, auto)

        best = {}
        for name, f in (("plain", run_plain), ("final", run_final), ("auto", run_auto)):
            f()
            sync()
        for _ in range(args.rounds):
            for name, f in (("plain", run_plain), ("final", run_final), ("auto", run_auto)):
                t = time.perf_counter()
                f()
                sync()
                best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        gpu_note = ""
        if dev.type == "cuda":
            cpu_model = open_model(wpath, factory=factory, height=args.size, width=args.size, device="cpu")
            a = model.extract(batches[0][:16], auto)
            b = cpu_model.extract(batches[0][:16], auto)
            cos = []
            for k in auto:
                x, y = a[k].astype(np.float64), b[k].astype(np.float64)
                cos.append(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30)).min())
            gpu_note = f"GPU vs CPU features, min cosine over {len(auto)} layers x 16 images: {min(cos):.6f}"
    name = spec or "built-in small CNN"
    print(f"model: {name}  device: {dev}  ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'})  "
          f"batch: {args.batch}  images: {n}  input: {args.size}x{args.size}  auto layers: {', '.join(auto)}")
    print(f"{'measure':<40}{'seconds':>10}{'images/s':>12}{'vs plain':>10}")
    for label, key in (("plain torch forward (baseline)", "plain"), ("faceaudit extract, final only", "final"),
                       ("faceaudit extract, 5 layers (auto)", "auto")):
        print(f"{label:<40}{best[key]:>10.3f}{n / best[key]:>12.1f}{best[key] / best['plain']:>9.2f}x")
    if gpu_note:
        print(gpu_note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
