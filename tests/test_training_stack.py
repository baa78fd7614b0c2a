"""The training stack: dropping stopped critics from it must not change any number."""

from __future__ import annotations

import numpy as np
import torch

from faceaudit.expressivity import training


def _stack(n: int) -> training._Stack:
    g = torch.Generator().manual_seed(0)
    params = {
        "W": torch.randn((n, 4, 3), generator=g).requires_grad_(True),
        "b": torch.randn((n, 1, 3), generator=g).requires_grad_(True),
    }
    return training._Stack(params, torch.optim.Adam(list(params.values()), lr=0.05, weight_decay=0.01))


def _step(stack: training._Stack, jobs: np.ndarray, stopped: list[int]) -> None:
    """One Adam step on a loss whose per-critic part depends on the job, as in the training loop."""
    target = torch.from_numpy(jobs.astype(np.float32)).view(-1, 1, 1)
    loss = sum(((v - target) ** 2 * (1.0 + target)).sum() for v in stack.params.values())
    stack.opt.zero_grad(set_to_none=False)
    loss.backward()
    if stopped:
        for v in stack.params.values():
            v.grad.index_fill_(0, torch.tensor(stopped), 0.0)
    stack.opt.step()


def test_compacting_keeps_parameters_optimiser_and_state():
    a, b = _stack(4), _stack(4)
    for s in (a, b):
        s.lr_scale = torch.tensor([1.0, 0.3, 0.5, 0.1])
        s.state = {"log_ema": torch.tensor([0.1, 0.2, 0.3, 0.4]), ("shared", 8): torch.ones(1, 8)}
        for _ in range(3):
            _step(s, s.live, [])
    b.compact(np.array([0, 2]))  # critics 1 and 3 stopped
    np.testing.assert_array_equal(b.live, [0, 2])
    assert torch.equal(b.lr_scale, torch.tensor([1.0, 0.5]))
    assert torch.equal(b.state["log_ema"], torch.tensor([0.1, 0.3]))
    assert torch.equal(b.state[("shared", 8)], torch.ones(1, 8))  # shared across critics: kept whole
    for _ in range(5):  # the uncompacted stack carries the stopped critics along with zero gradients
        _step(a, a.live, [1, 3])
        _step(b, b.live, [])
    for k in a.params:
        assert torch.equal(a.params[k][[0, 2]], b.params[k]), k
        sa, sb = a.opt.state[a.params[k]], b.opt.state[b.params[k]]
        assert torch.equal(sa["exp_avg"][[0, 2]], sb["exp_avg"]) and torch.equal(sa["step"], sb["step"])


def test_compacting_twice_maps_positions_to_jobs():
    s = _stack(6)
    _step(s, s.live, [])
    w = s.params["W"].detach().clone()
    s.compact(np.array([1, 2, 4, 5]))
    s.compact(np.array([0, 3]))  # positions in the compacted stack: jobs 1 and 5
    np.testing.assert_array_equal(s.live, [1, 5])
    assert torch.equal(s.params["W"].detach(), w[[1, 5]])
