"""A seed ensemble: K independently trained copies of one architecture whose class probabilities are averaged.

    p(c | x) = (1/K) * sum_k softmax(z_k(x))_c                   z_k: member k's logits (N, C)

`forward` returns log p, computed stably as a log-sum-exp over the members' log-softmax outputs

    log p = logsumexp_k( log_softmax(z_k) ) - log K

so softmax(forward(x)) == p exactly (log p is already normalised), and everything that takes logits
(cross-entropy, `evaluate`, `predict`, the official MedMNIST evaluator) works on an ensemble unchanged.
Averaging probabilities of members that differ in initialisation, data order and augmentation cancels
much of the seed-to-seed variance of a single model, which on small data sets (a few hundred images)
is as large as the differences between recipes.

Training: each member gets its own loss on its own batch (see `tinycnn.training.Trainer`); the loss of
the averaged output is never trained, which would couple the members. state_dict names are
``members.<k>.<member name>`` (member k's weights are a normal `get_model` state_dict under that prefix).
"""
from __future__ import annotations

import math

from .. import nn
from ..tensor import stack

__all__ = ["Ensemble", "member_seed"]


def member_seed(seed: int, k: int) -> int:
    """Data-order/augmentation seed of member k: member 0 uses the run's seed (a 1-member ensemble is a
    plain run); the others get seeds far from any seed a user would type next (seed + 1, seed + 2 ...)."""
    return int(seed) + 100_003 * int(k)


class Ensemble(nn.Module):
    """Average of the softmax outputs of `members` (Modules with the same classes); see the module docstring."""

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("Ensemble needs at least one member model")
        self.members = nn.ModuleList(members)
        first = members[0]
        # the default Grad-CAM layer and head are the members' (grad_cam averages over members)
        self.cam_layer = getattr(first, "cam_layer", None)
        self.head = getattr(first, "head", None)

    def __len__(self):
        return len(self.members)

    def forward(self, x):
        logp = stack([m(x).log_softmax(1) for m in self.members], dim=0)   # (K, N, C)
        shift = logp.max(dim=0, keepdim=True)[0].detach()                     # no gradient through the shift
        return (logp - shift).exp().sum(dim=0).log() + shift.squeeze(0) - math.log(len(self.members))
