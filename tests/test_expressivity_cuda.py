"""The expressivity core on a CUDA GPU; skipped where torch sees none.

The CPU suite checks the numbers; these check that the same code trains on the GPU
(every critic's forward pass sees CUDA tensors) and that its numbers agree with the
known answer and with the CPU within the estimator's own sampling error. CUDA's
kernels round differently from the CPU's, and differently for another number of
critics in a stack, so training paths drift apart by rounding: agreement is within
0.1 nats (on the CPU another thread count alone moves the speed benchmark's
estimates by up to 0.07 nats), not to the bit as between CPU stacks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import FAST, gaussian_task

from faceaudit.expressivity import critics, estimate_expressivity, estimate_many
from faceaudit.expressivity.training import resolve_device

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="torch sees no CUDA GPU: these tests check the GPU path on a machine with one"
)


@pytest.fixture
def devices_seen(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The device types of the features every critic encodes (training and evaluation)."""
    seen: set[str] = set()
    real = critics.encode

    def spy(p, x):  # records, then runs the real encoder
        seen.add(x.device.type)
        return real(p, x)

    monkeypatch.setattr(critics, "encode", spy)
    return seen


def test_auto_picks_the_gpu():
    assert resolve_device("auto").type == "cuda"


def test_closed_form_gaussian_on_the_gpu(devices_seen: set[str]):
    x, y, truth = gaussian_task(3000, 5, 0.8, seed=1)
    r = estimate_expressivity(x, y, seeds=2, device="cuda", progress=False, **FAST)
    assert devices_seen == {"cuda"}
    assert abs(r.mi - truth) < 0.12, (r.mi, truth)
    assert r.ci_low <= r.mi <= r.ci_high
    assert abs(r.null_mi) < 0.05


def test_gpu_agrees_with_cpu_and_batched_with_one_at_a_time():
    rng = np.random.default_rng(6)
    n = 2000
    y = rng.normal(size=n)
    c = rng.integers(0, 3, size=n)
    feats = {"l1": np.c_[y + rng.normal(size=n), rng.normal(size=(n, 2))],
             "l2": np.c_[np.sin(y)[:, None] + rng.normal(size=(n, 5)) * 0.5, c]}
    attrs = {"age": (y, "continuous"), "grp": (c, "categorical")}
    kw = dict(seeds=2, progress=False, max_steps=600, patience=4)
    gpu = estimate_many(feats, attrs, device="cuda", **kw)
    one = estimate_many(feats, attrs, device="cuda", batched=False, **kw)
    cpu = estimate_many(feats, attrs, device="cpu", workers=1, **kw)
    for key in gpu:
        assert abs(gpu[key].mi - one[key].mi) < 0.1, (key, gpu[key].mi, one[key].mi)
        assert abs(gpu[key].mi - cpu[key].mi) < 0.1, (key, gpu[key].mi, cpu[key].mi)
    for key in (("l1", "age"), ("l2", "age"), ("l2", "grp")):  # l1 carries nothing of the group
        assert gpu[key].mi > gpu[key].null_mi + 0.1, (key, gpu[key].mi, gpu[key].null_mi)
