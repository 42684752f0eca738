"""The reference CNN of issue 3, built in tinycnn and in PyTorch with identical weights.

    conv3x3 1->32 pad 1, ReLU, maxpool 2, conv3x3 32->64 pad 1, ReLU, maxpool 2,
    flatten, linear 3136->128, ReLU, linear 128->2

Both are `Sequential`s with the same layout, so their state_dict keys (`0.weight`, `3.bias`,
`7.weight`, `9.bias`) coincide and weights move between them by name. Used by
tests/test_end_to_end.py and benchmarks/train_step.py.
"""
from __future__ import annotations

import numpy as np


def tinycnn_model(dtype="float32"):
    """The reference CNN as a tinycnn.nn.Sequential (tinycnn's default initialisation)."""
    from tinycnn import nn

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 2),
    )
    return model.double() if np.dtype(dtype) == np.float64 else model


def torch_model(dtype="float32", channels_last=False):
    """The reference CNN as a torch.nn.Sequential (PyTorch's default initialisation)."""
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 2),
    )
    model = model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def torch_state_as_numpy(torch_model_):
    """The torch model's state_dict as name -> NumPy array (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in torch_model_.state_dict().items()}


def model_pair(seed=0, dtype="float32", channels_last=False):
    """(tinycnn model, torch model) with the torch model's initial weights copied into tinycnn's."""
    import torch

    torch.manual_seed(seed)
    tm = torch_model(dtype, channels_last=channels_last)
    ours = tinycnn_model(dtype)
    ours.load_state_dict(torch_state_as_numpy(tm))
    return ours, tm


def random_batch(n=128, seed=0, dtype="float32"):
    """Images (n, 1, 28, 28) in [0, 1) and integer labels in {0, 1}."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 2, n).astype(np.int64)
    return x, y
