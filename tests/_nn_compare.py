"""Helpers shared by the layer/loss tests: run the same inputs through tinycnn and PyTorch and compare."""
import numpy as np
import torch

import tinycnn

# float64 must agree to round-off; float32 to a few ulps of the values involved
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=2e-6)}


def tol(dtype):
    return TOL[np.dtype(dtype).type]


def pair(a, requires_grad=True):
    """The same array as a tinycnn Tensor and a torch tensor (both leaves)."""
    a = np.asarray(a)
    floating = a.dtype.kind == "f"
    t = tinycnn.tensor(a.copy(), requires_grad=requires_grad and floating)
    tt = torch.tensor(a.copy(), requires_grad=requires_grad and floating)
    return t, tt


def assert_close(ours, theirs, dtype, name="", scale=1.0):
    """Compare a tinycnn Tensor/array with a torch tensor/array; `scale` widens atol for big magnitudes."""
    o = ours.numpy() if isinstance(ours, tinycnn.Tensor) else np.asarray(ours)
    t = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert o.shape == t.shape, f"{name}: shape {o.shape} vs torch {t.shape}"
    kw = tol(dtype)
    np.testing.assert_allclose(o, t, rtol=kw["rtol"], atol=kw["atol"] * scale, err_msg=name)


def backward_both(y, yt, rng):
    """Backprop the same random upstream gradient (or 1 for scalars) through both graphs."""
    if y.numel() == 1 and y.ndim == 0:
        y.backward()
        yt.backward()
        return None
    g = rng.standard_normal(y.shape).astype(y.dtype)
    y.backward(tinycnn.tensor(g))
    yt.backward(torch.tensor(g))
    return g


class FixedLogits(tinycnn.nn.Module):
    """A "model" that returns preset logits z (to test code that combines model outputs on chosen values).
    `x.sum() * 0` keeps the input in the graph, so input gradients exist (and are zero)."""

    def __init__(self, z):
        super().__init__()
        self.z = z

    def forward(self, x):
        return tinycnn.tensor(self.z) + x.sum() * 0.0


def assert_same_checkpoints(path_a, path_b):
    """Two safetensors files hold the same tensor names with bit-identical values."""
    a, b = tinycnn.load(path_a), tinycnn.load(path_b)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_resume_is_bit_identical(settings: dict, full_run_dir, out, column="val_loss"):
    """Train `settings` into `out`, "kill" it after epoch 1, resume it from arbitrary RNG state, and check
    that its last checkpoint and history column equal those of the uninterrupted run in `full_run_dir`."""
    import csv
    from pathlib import Path

    from tinycnn.training import train_run

    full_run_dir, out = Path(full_run_dir), Path(out)
    first = train_run({**settings, "out": str(out)}, log=None, quiet=True, stop_after=1)
    assert first.get("stopped") and not (out / "metrics.json").exists()
    assert len(list(csv.DictReader((out / "history.csv").open()))) == 1
    tinycnn.manual_seed(12345)  # a resumed process starts from arbitrary RNG state
    train_run({"out": str(out), "resume": True}, log=None, quiet=True)
    assert_same_checkpoints(full_run_dir / "last.safetensors", out / "last.safetensors")
    assert ([r[column] for r in csv.DictReader((full_run_dir / "history.csv").open())]
            == [r[column] for r in csv.DictReader((out / "history.csv").open())])
