"""A seed ensemble: K independently trained copies of one architecture whose class probabilities are averaged.

    p(c | x) = (1/K) * sum_k softmax(z_k(x))_c                   z_k: member k's logits (N, C)

`forward` returns log p, computed stably as a log-sum-exp over the members' log-softmax outputs

    log p = logsumexp_k( log_softmax(z_k) ) - log K

so softmax(forward(x)) == p exactly (log p is already normalised), and everything that takes logits
(cross-entropy, `evaluate`, `predict`, the official MedMNIST evaluator) works on an ensemble unchanged.
Averaging probabilities of members that differ in initialisation, data order and augmentation cancels
much of the seed-to-seed variance of a single model, which on small data sets (a few hundred images)
is as large as the differences between recipes.

Multi-label ensembles (`Ensemble(members, multilabel=True)`, one sigmoid per label; ChestMNIST): the
members' per-label probabilities are averaged instead,

    p_l(x) = (1/K) * sum_k sigmoid(z_kl(x))

and `forward` returns the logit of that mean, so that sigmoid(forward(x)) == p exactly:

    logit p = log p - log(1 - p)
            = logsumexp_k( log sigmoid(z_k) ) - logsumexp_k( log sigmoid(-z_k) )      (the log K cancel)
    log sigmoid(z) = -( max(-z, 0) + log(1 + exp(-|z|)) )

which stays finite where a member's sigmoid rounds to 0 or 1. It is monotone in p, so the most probable
label (Grad-CAM's default target) is the argmax of the output, as for the single-label ensemble.

Training: each member gets its own loss on its own batch (see `tinycnn.training.Trainer`); the loss of
the averaged output is never trained, which would couple the members. state_dict names are
``members.<k>.<member name>`` (member k's weights are a normal `get_model` state_dict under that prefix).
"""
from __future__ import annotations

import math

from .. import nn
from ..tensor import stack

__all__ = ["Ensemble", "member_seed", "average_outputs"]


def member_seed(seed: int, k: int) -> int:
    """Data-order/augmentation seed of member k: member 0 uses the run's seed (a 1-member ensemble is a
    plain run); the others get seeds far from any seed a user would type next (seed + 1, seed + 2 ...)."""
    return int(seed) + 100_003 * int(k)


class Ensemble(nn.Module):
    """Average of the softmax outputs of `members` (Modules with the same classes), or of their per-label
    sigmoid outputs with `multilabel=True`; see the module docstring."""

    def __init__(self, members, multilabel: bool = False):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("Ensemble needs at least one member model")
        self.members = nn.ModuleList(members)
        self.multilabel = bool(multilabel)
        first = members[0]
        # the default Grad-CAM layer and head are the members' (grad_cam averages over members)
        self.cam_layer = getattr(first, "cam_layer", None)
        self.head = getattr(first, "head", None)

    def __len__(self):
        return len(self.members)

    def forward(self, x):
        return average_outputs([m(x) for m in self.members], self.multilabel)


def average_outputs(outputs, multilabel: bool = False):
    """The output whose probabilities are the mean of the probabilities of K outputs (each (N, C) logits):
    log of the mean softmax, or for `multilabel` the logit of the mean per-label sigmoid (module docstring).
    Used for an ensemble's members and for test-time flips of one model's input (`predict_logits`)."""
    if multilabel:
        z = stack(list(outputs), dim=0)                                     # (K, N, L)
        return _logsumexp0(_log_sigmoid(z)) - _logsumexp0(_log_sigmoid(-z))
    logp = stack([z.log_softmax(1) for z in outputs], dim=0)            # (K, N, C)
    return _logsumexp0(logp) - math.log(logp.shape[0])


def _logsumexp0(t):
    """log sum_k exp(t[k]) over the first axis, with the (detached) max subtracted first."""
    shift = t.max(dim=0, keepdim=True)[0].detach()                         # no gradient through the shift
    return (t - shift).exp().sum(dim=0).log() + shift.squeeze(0)


def _log_sigmoid(z):
    """log sigmoid(z) = -(max(-z, 0) + log(1 + exp(-|z|))): no overflow, no log of 0."""
    return -((-z).relu() + ((-z.abs()).exp() + 1.0).log())
