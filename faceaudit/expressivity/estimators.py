"""MI estimators, each a class registered in the ``faceaudit.estimators`` entry-point group.

An estimator holds hyper-parameters only (scikit-learn style); the batched
training loop in :mod:`training` calls its hooks. The four variational
bounds share one separable critic T(x, y) = <f(x), g(y)> and differ only in
the objective:

* ``mine`` -- Donsker-Varadhan bound E_P[T] - log E_Q[e^T]; the gradient of the
  log-mean-exp term is corrected with an exponential moving average of E_Q[e^T]
  (Belghazi et al. 2018), as used for expressivity by Dhar et al. (FG 2020).
* ``smile`` -- DV with the critic clipped to [-tau, tau] inside the partition
  term (Song & Ermon 2020): lower variance, small bias for large MI.
* ``nwj`` -- E_P[T] - e^{-1} E_Q[e^T] (Nguyen-Wainwright-Jordan / f-GAN KL): unbiased
  minibatch gradients, higher variance.
* ``infonce`` -- contrastive bound, low variance but capped at log(number of
  negatives); only for small MI.

``entropy`` estimates H(Y) - H(Y|X) with a conditional model of the attribute
(softmax classifier for a category, mixture density network for a number) and
a marginal model (class frequencies / 1-D Gaussian mixture), both scored on
held-out rows (Barber-Agakov style). It is the most accurate choice for a
low-dimensional attribute.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from faceaudit.errors import InputError
from faceaudit.expressivity import critics

_DEFAULTS: dict[str, Any] = {
    "hidden": 32,  # width of the two hidden layers of the feature encoder (64 is no more accurate, and slower)
    "embed": 16,  # width of the critic's inner product
    "y_hidden": 0,  # continuous attribute: 0 = g linear in the bump basis of y; > 0 = width of a 2-layer MLP of it
    "lr": 2e-3,  # Adam learning rate at the start (lowered on plateaus, see lr_decay)
    "weight_decay": 0.0,
    "batch_size": 512,  # rows per step; all pairs of a batch feed the marginal term
    "max_steps": 4000,  # nonlinear, high-MI relations keep improving past 2,000 steps
    "min_steps": 200,
    "lr_decay": 0.3,  # factor applied to a critic's learning rate when its validation bound stops improving
    "lr_decays": 2,  # how many times; after the last, `patience` evaluations without improvement stop it
    "eval_every": 50,  # steps between validation evaluations
    "patience": 12,  # evaluations without improvement before stopping (the validation bound is noisy)
    "min_delta": 1e-4,  # nats
    "heldout": 0.2,  # fraction of a fold's training rows held out for validation (early stopping, probe choice)
    "val_cols": 256,  # marginal columns used for the validation bound (all are used for the test bound)
    "marginal_cols": 64,  # attribute values each training row is paired with in the marginal term (None: all)
    "linear_head": True,  # critics start from their fold's linear probe (see probe.py, critics.py)
    "generative_head": True,  # continuous: or from a Gaussian model of x given y, when it validates better
    "norm_refs": 1024,  # attribute values (not test rows) a continuous critic is normalised over when evaluated
    "cap": 8.0,  # smooth upper bound on critic values (nats); DV is shift-invariant so only the range matters
}


class NeuralEstimator:
    """Base class: hyper-parameters and the hooks the batched training loop calls."""

    name: ClassVar[str] = "base"
    family: ClassVar[str] = "critic"  # "critic" (variational bound) or "conditional" (entropy difference)
    contrastive: ClassVar[bool] = False  # True when the held-out bound needs each row's own pair among the negatives
    # held-out critics are normalised over reference attribute values, T - log Z(x) + norm_shift, the best
    # correction by a function of x for the bound (0 for DV, 1 for NWJ); None: the bound is already invariant
    norm_shift: ClassVar[float | None] = 0.0
    extra_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        known = {**_DEFAULTS, **self.extra_defaults}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(
                f"unknown option(s) {', '.join(unknown)} for estimator {self.name!r}; "
                f"valid options are: {', '.join(sorted(known))}."
            )
        merged = {**known, **options}
        for k, v in merged.items():
            setattr(self, k, v)
        self._options = merged
        if not 0.05 <= float(self.heldout) <= 0.5:
            raise InputError(
                f"heldout={self.heldout} must be between 0.05 and 0.5 (fraction of a fold's training rows held out "
                "for validation)."
            )
        for k in ("hidden", "embed", "batch_size", "max_steps", "eval_every", "patience"):
            if int(getattr(self, k)) < 1:
                raise InputError(f"option {k}={getattr(self, k)} must be a positive integer.")
        if not 0.0 < float(self.lr_decay) <= 1.0 or int(self.lr_decays) < 0:
            raise InputError(
                f"lr_decay={self.lr_decay} must be in (0, 1] and lr_decays={self.lr_decays} a non-negative integer "
                "(lr_decays=0 keeps the learning rate fixed)."
            )
        if int(self.y_hidden) < 0:
            raise InputError(
                f"option y_hidden={self.y_hidden} must be a non-negative integer (0: the attribute branch is linear "
                "in the basis of y; > 0: the width of its two hidden layers)."
            )
        if int(self.norm_refs) < 0:
            raise InputError(f"option norm_refs={self.norm_refs} must be a non-negative integer (0: no normalisation).")
        for k in ("linear_head", "generative_head"):
            if not isinstance(getattr(self, k), (bool, np.bool_)):
                raise InputError(f"option {k}={getattr(self, k)!r} must be True or False.")
        mc = merged.get("marginal_cols")
        if mc is not None and int(mc) < 2:
            raise InputError(f"option marginal_cols={mc} must be an integer >= 2, or None (all pairs of a batch).")

    def options(self) -> dict[str, Any]:
        """The hyper-parameters in effect (for the report)."""
        return dict(self._options)

    # hooks -----------------------------------------------------------------
    def head_out(self, n_classes: int) -> int:
        return int(self.embed)

    def prepare(self, jobs: list, splits: list, aux: dict[str, Tensor], Y: Tensor, dev: torch.device) -> None:
        """Precompute per-job quantities (nothing for critics)."""

    def transform_marginal(self, t: Tensor) -> Tensor:
        return t

    def identity_marginal(self) -> bool:
        """True when :meth:`transform_marginal` is the identity (not overridden): the held-out
        evaluation may then sum the marginal pairs in ratio space."""
        return type(self).transform_marginal is NeuralEstimator.transform_marginal

    def train_step(self, p, xb, yb, continuous, aux, state, idx) -> tuple[Tensor, Tensor]:
        f = critics.encode(p, xb)
        G, B = yb.shape
        if continuous:
            g = critics.embed_y(p, yb)
            t_pos = critics.soft_cap((f * g).sum(-1), self.cap)
            # marginal pairs: every row x_i against the first M attribute values of the (shuffled) batch,
            # j != i; M = marginal_cols (all B when None). The pair average stays unbiased for E_Q[e^T];
            # M << B makes the step M/B as costly in memory traffic, which dominates on CPU.
            M = self._marginal_cols(B)
            mat = torch.bmm(f, g[:, :M].transpose(1, 2))  # (G, B, M), not yet capped
            key = ("offdiag", B, M)
            if key not in state:
                lw = torch.full((B, M), -math.log(M), device=xb.device)
                lw[:M] = -math.log(M - 1)
                lw[:M].fill_diagonal_(-math.inf)
                state[key] = lw.unsqueeze(0)
                state[("nce", B, M)] = torch.full((1, B, M), -math.log(M), device=xb.device)
            logw, logw_nce = state[key], state[("nce", B, M)]
        else:
            mat = critics.class_logits(p, f)
            t_pos = critics.soft_cap(mat.gather(-1, yb.unsqueeze(-1)).squeeze(-1), self.cap)
            logw = logw_nce = aux["train_logp"]
        return self.objective(t_pos, mat, logw, logw_nce, state)

    def _marginal_cols(self, B: int) -> int:
        m = self._options.get("marginal_cols")
        return B if m is None else int(max(2, min(B, int(m))))

    def objective(self, t_pos, mat, logw, logw_nce, state) -> tuple[Tensor, Tensor]:
        """(loss, bound) per critic from the capped joint values `t_pos` (G, B) and the uncapped
        marginal values `mat` (G, B, M) with their log-weights `logw` (each row's sum to 1)."""
        raise NotImplementedError

    @staticmethod
    def _log_mean_exp(mat: Tensor, logw: Tensor) -> Tensor:
        B = mat.shape[1]  # every row's weights sum to 1, so this is the mean over rows
        return torch.logsumexp((mat + logw).flatten(1), 1) - math.log(B)

    def _capped_log_mean_exp(self, mat: Tensor, logw: Tensor) -> Tensor:
        """:meth:`_log_mean_exp` of ``soft_cap(mat)``, from exp(soft_cap(t)) = e^cap * sigmoid(t - cap): a
        sigmoid and a weighted sum replace the softplus and the log-sum-exp, a third of the passes over
        the (G, B, M) matrix (which dominate a training step). Values stay in (0, 1), so nothing overflows."""
        cap = float(self.cap)
        tot = (torch.sigmoid(mat - cap) * torch.exp(logw)).sum((1, 2))
        return cap + torch.log(tot.clamp_min(1e-30)) - math.log(mat.shape[1])

    def heldout_critic(self, t_pos, row, row_nce, col, mask) -> tuple[Tensor, Tensor]:
        """DV-type bound and a delta-method standard error (Hajek projection of the pair average)."""
        n = mask.sum(1).float()
        mf = mask.float()
        joint = (t_pos * mf).sum(1) / n
        m = torch.logsumexp(torch.where(mask, row, torch.full_like(row, -math.inf)), 1) - torch.log(n)
        value = self.combine(joint, m)
        infl = t_pos - self.marginal_weight(m)[:, None] * (
            torch.exp(row - m[:, None]) + torch.exp(col - m[:, None])
        )
        return value, _masked_sd(infl, mask) / torch.sqrt(n)

    def bound_from_terms(self, terms: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        """The bound and its standard error from per-row held-out terms (see ``evaluate(raw=True)``),
        (G, m) each; rows of several folds may be pooled, each scored by its own fold's critic."""
        return self.heldout_critic(terms["t_pos"], terms["row"], terms["row_nce"], terms["col"], mask)

    def combine(self, joint: Tensor, log_marg: Tensor) -> Tensor:
        return joint - log_marg

    def marginal_weight(self, log_marg: Tensor) -> Tensor:
        return torch.ones_like(log_marg)


def _masked_sd(v: Tensor, mask: Tensor) -> Tensor:
    n = mask.sum(1).float()
    mf = mask.float()
    mu = (v * mf).sum(1) / n
    var = (((v - mu[:, None]) ** 2) * mf).sum(1) / (n - 1).clamp(min=1)
    return torch.sqrt(var)


class MINE(NeuralEstimator):
    """Donsker-Varadhan bound with the EMA-corrected gradient (Belghazi et al. 2018). The default."""

    name = "mine"
    extra_defaults = {"ema_rate": 0.01}

    def objective(self, t_pos, mat, logw, logw_nce, state):
        joint = t_pos.mean(1)
        m = self._capped_log_mean_exp(mat, logw)
        a = float(self.ema_rate)
        if "log_ema" not in state:
            state["log_ema"] = m.detach()
        else:
            state["log_ema"] = torch.logaddexp(state["log_ema"] + math.log(1 - a), m.detach() + math.log(a))
        # d/dθ exp(m - log_ema) = (E_Q[e^T] / EMA) dm/dθ : the bias-corrected gradient of log E_Q[e^T]
        surrogate = joint - torch.exp(m - state["log_ema"])
        return -surrogate, (joint - m).detach()


class SMILE(NeuralEstimator):
    """DV bound with the critic clipped to [-clip, clip] in the partition term (Song & Ermon 2020)."""

    name = "smile"
    extra_defaults = {"clip": 5.0}

    def transform_marginal(self, t: Tensor) -> Tensor:
        return torch.clamp(t, -float(self.clip), float(self.clip))

    def objective(self, t_pos, mat, logw, logw_nce, state):
        # value: clipped DV; gradient: Jensen-Shannon f-GAN bound (as in the SMILE reference code),
        # because the clipped DV alone is unbounded in the joint term
        mat = critics.soft_cap(mat, self.cap)
        v = t_pos.mean(1) - self._log_mean_exp(self.transform_marginal(mat), logw)
        sp = torch.nn.functional.softplus
        js = -sp(-t_pos).mean(1) - (sp(mat) * torch.exp(logw)).sum(-1).mean(1)
        return -js, v.detach()


class NWJ(NeuralEstimator):
    """Nguyen-Wainwright-Jordan bound E_P[T] - e^{-1} E_Q[e^T]."""

    name = "nwj"
    norm_shift = 1.0  # NWJ's optimal critic is 1 + log p(x, y) / (p(x) p(y))

    def objective(self, t_pos, mat, logw, logw_nce, state):
        v = self.combine(t_pos.mean(1), self._capped_log_mean_exp(mat, logw))
        return -v, v.detach()

    def combine(self, joint, log_marg):
        return joint - torch.exp(log_marg - 1.0)

    def marginal_weight(self, log_marg):
        return torch.exp(log_marg - 1.0)


class InfoNCE(NeuralEstimator):
    """Contrastive (InfoNCE) bound; cannot exceed log(number of negatives)."""

    name = "infonce"
    contrastive = True
    norm_shift = None  # the contrastive bound is unchanged by adding a function of x
    # the contrastive bound needs each row's own positive among its candidates: all pairs of the batch
    extra_defaults = {"marginal_cols": None}

    def objective(self, t_pos, mat, logw, logw_nce, state):
        v = (t_pos - torch.logsumexp(critics.soft_cap(mat, self.cap) + logw_nce, -1)).mean(1)
        return -v, v.detach()

    def heldout_critic(self, t_pos, row, row_nce, col, mask):
        d = t_pos - row_nce
        n = mask.sum(1).float()
        return (d * mask.float()).sum(1) / n, _masked_sd(d, mask) / torch.sqrt(n)


class EntropyDifference(NeuralEstimator):
    """I(X;Y) = H(Y) - H(Y|X) from held-out log-likelihoods of a conditional and a marginal model.

    Categorical: softmax classifier vs. training class frequencies. Continuous:
    mixture density network p(y|x) (``components`` Gaussians) vs. a 1-D Gaussian
    mixture p(y) fitted on the training rows.
    """

    name = "entropy"
    family = "conditional"
    extra_defaults = {"components": 5, "marginal_components": 8}

    def head_out(self, n_classes: int) -> int:
        return n_classes if n_classes else 3 * int(self.components)

    def prepare(self, jobs, splits, aux, Y, dev):
        if jobs[0].n_classes:
            return
        from sklearn.mixture import GaussianMixture

        n_max = Y.shape[1]
        logq = torch.zeros((len(jobs), n_max), dtype=torch.float32)
        for g, (j, sp) in enumerate(zip(jobs, splits)):
            ytr = j.y[sp[0]].reshape(-1, 1)
            k = int(min(self.marginal_components, max(1, len(np.unique(ytr)))))
            gm = GaussianMixture(n_components=k, random_state=int(j.seed) % (2**31), reg_covar=1e-4).fit(ytr)
            logq[g, torch.from_numpy(j.rows.astype(np.int64))] = torch.from_numpy(
                gm.score_samples(j.y.reshape(-1, 1)).astype(np.float32)
            )
        aux["logq"] = logq.to(dev)

    def _row_terms(self, f, y, continuous, aux, idx):
        if not continuous:
            valid = aux["class_valid"]  # (G,1,C)
            logits = torch.where(valid, f, torch.full_like(f, -1e9))
            lp = torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
            lq = aux["train_logp"].squeeze(1).gather(1, y)
            return lp, lq
        K = int(self.components)
        pi, mu, s = f[..., :K], f[..., K : 2 * K], f[..., 2 * K :]
        log_sigma = torch.clamp(s, -6.0, 4.0)
        z = (y.unsqueeze(-1) - mu) * torch.exp(-log_sigma)
        lnorm = -0.5 * z * z - log_sigma - 0.5 * math.log(2 * math.pi)
        lp = torch.logsumexp(torch.log_softmax(pi, -1) + lnorm, -1)
        lq = aux["logq"].gather(1, idx)
        return lp, lq

    def train_step(self, p, xb, yb, continuous, aux, state, idx):
        f = critics.encode(p, xb)
        lp, lq = self._row_terms(f, yb, continuous, aux, idx)
        return -lp.mean(1), (lp - lq).mean(1).detach()

    def heldout_conditional(self, f, y, mask, continuous, aux, idx, which):
        lp, lq = self._row_terms(f, y, continuous, aux, idx)
        return {"d": lp - lq}

    def bound_from_terms(self, terms, mask):
        d = terms["d"]
        n = mask.sum(1).float()
        return (d * mask.float()).sum(1) / n, _masked_sd(d, mask) / torch.sqrt(n)


BUILTIN = {c.name: c for c in (MINE, SMILE, NWJ, InfoNCE, EntropyDifference)}

__all__ = [
    "BUILTIN",
    "EntropyDifference",
    "InfoNCE",
    "MINE",
    "NWJ",
    "NeuralEstimator",
    "SMILE",
]
