"""End to end: the reference CNN trains like PyTorch's, and learns PneumoniaMNIST in one epoch."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tinycnn
import tinycnn.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.reference_cnn import model_pair, random_batch, tinycnn_model, torch_model  # noqa: E402


def _train_both(dtype, steps=3, batch=16):
    ours, theirs = model_pair(seed=0, dtype=dtype)
    opt = tinycnn.optim.Adam(ours.parameters(), lr=1e-3)
    topt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        x, y = random_batch(batch, seed=step, dtype=dtype)
        opt.zero_grad()
        loss = F.cross_entropy(ours(tinycnn.tensor(x)), tinycnn.tensor(y))
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        losses.append((loss.item(), tloss.item()))
    return ours, theirs, losses


# float32: Adam's step lr g / (sqrt(v) + eps) is ill-conditioned where |g| is of the order of eps (1e-8):
# the ~3e-9 float32 rounding difference between any two correct conv implementations (im2col or
# Winograd against PyTorch's, measured the same for both) moves such a weight by a few % of lr = 1e-3
# per step. float64 checks the trajectory tightly.
@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-9, 1e-11), ("float32", 1e-4, 5e-5)])
def test_three_adam_steps_match_pytorch(dtype, rtol, atol):
    ours, theirs, losses = _train_both(dtype)
    for ours_loss, torch_loss in losses:
        np.testing.assert_allclose(ours_loss, torch_loss, rtol=rtol * 10)
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert list(sd) == list(tsd)
    for k in tsd:
        t = tsd[k].detach().numpy()
        assert sd[k].dtype == t.dtype, k
        np.testing.assert_allclose(sd[k], t, rtol=rtol, atol=atol, err_msg=k)
    # the weights really moved away from the shared starting point (3 steps of lr 1e-3)
    start, _ = model_pair(seed=0, dtype=dtype)
    moved = max(np.abs(sd[k] - v).max() for k, v in start.state_dict().items())
    assert moved > 1e-3


def test_state_dict_keys_and_shapes_equal_torch():
    torch.manual_seed(0)
    sd = tinycnn_model().state_dict()
    tsd = torch_model().state_dict()
    assert list(sd) == list(tsd) == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                                     "9.weight", "9.bias"]
    for k in tsd:
        assert sd[k].shape == tuple(tsd[k].shape), k
        assert sd[k].dtype == np.float32, k


def test_copied_torch_weights_give_same_outputs_float32():
    ours, theirs = model_pair(seed=1)
    x, _ = random_batch(8, seed=3)
    with tinycnn.no_grad():
        out = ours(tinycnn.tensor(x)).numpy()
    np.testing.assert_allclose(out, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_one_epoch_on_pneumoniamnist_reaches_088_val_accuracy(data_dir):
    """The reference CNN, tinycnn's own initialisation (seed 0), one epoch of Adam 1e-3, reaches 0.88 on val.

    Inputs are standardised with the training set's mean and std and the batch is 64 (74 steps).
    With raw /255 inputs and batch 128 (37 steps) one epoch is too short: the result then depends
    mostly on the initial draw (PyTorch itself gave 0.849..0.927 over seeds 0..5). In this set-up
    tinycnn gave 0.948, 0.950, 0.956 for seeds 0, 1, 2. Takes ~15 s on an idle 2-core machine.
    """
    start = time.perf_counter()
    d = np.load(data_dir / "pneumoniamnist.npz")
    x_train = (d["train_images"].astype(np.float32) / 255.0)[:, None]
    y_train = d["train_labels"].reshape(-1).astype(np.int64)
    x_val = (d["val_images"].astype(np.float32) / 255.0)[:, None]
    y_val = d["val_labels"].reshape(-1).astype(np.int64)
    mean, std = x_train.mean(), x_train.std()
    x_train = (x_train - mean) / std
    x_val = (x_val - mean) / std

    tinycnn.manual_seed(0)
    model = tinycnn_model()
    opt = tinycnn.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(len(x_train))
    model.train()
    for i in range(0, len(order), 64):
        idx = order[i:i + 64]
        opt.zero_grad()
        loss = F.cross_entropy(model(tinycnn.tensor(x_train[idx])), tinycnn.tensor(y_train[idx]))
        loss.backward()
        opt.step()
    assert np.isfinite(loss.item())

    model.eval()
    correct = 0
    with tinycnn.no_grad():
        for i in range(0, len(x_val), 256):
            pred = model(tinycnn.tensor(x_val[i:i + 256])).argmax(1).numpy()
            correct += int((pred == y_val[i:i + 256]).sum())
    accuracy = correct / len(x_val)
    elapsed = time.perf_counter() - start
    print(f"one epoch: val accuracy {accuracy:.4f} in {elapsed:.1f} s")
    assert accuracy >= 0.88
