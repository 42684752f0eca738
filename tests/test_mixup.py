"""Mixup (`--mixup ALPHA`, Trainer(mixup=...)): mixed inputs, the loss mixed alike, exact resume."""
import json

import numpy as np
import pytest

import tinycnn
from _nn_compare import assert_resume_is_bit_identical
from tinycnn import nn
from tinycnn.cli import main
from tinycnn.nn import functional as F
from tinycnn.training import Trainer, train_run

QUICK = {"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 2, "batch_size": 32, "seed": 0,
         "ensemble": 2, "mixup": 0.4}


class _Loader:
    """One fixed batch per epoch (what Trainer.train_epoch asks of a DataLoader)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def iter_epoch(self, epoch):
        yield self.x, self.y

    def __len__(self):
        return 1


def test_one_step_is_the_mixed_loss_of_the_mixed_batch():
    """The gradient step equals the one computed by hand: lam L(z(x_mix), y) + (1 - lam) L(z(x_mix), y[perm])."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1, 0])
    weights = [rng.standard_normal((2, 3)).astype(np.float32), np.zeros(2, np.float32)]

    def model_and_opt():
        m = nn.Linear(3, 2)
        m.weight.data[...] = weights[0]
        m.bias.data[...] = weights[1]
        return m, tinycnn.optim.SGD(m.parameters(), lr=0.5)

    m, opt = model_and_opt()
    tr = Trainer(m, opt, None, label_smoothing=0.1, class_weights=[1.0, 2.0], seed=7, quiet=True, mixup=0.4)
    tr.train_epoch(_Loader(x, y), epoch=3)

    lam, perm = tr._mix(3, 0, 0, len(x))
    assert 0.0 < lam < 1.0 and sorted(perm) == list(range(6))
    ref, ref_opt = model_and_opt()
    z = ref(tinycnn.tensor(lam * x + (1 - lam) * x[perm]))
    w = tinycnn.tensor(np.array([1.0, 2.0], np.float32))
    loss = (F.cross_entropy(z, tinycnn.tensor(y), weight=w, label_smoothing=0.1) * lam
            + F.cross_entropy(z, tinycnn.tensor(y[perm]), weight=w, label_smoothing=0.1) * (1 - lam))
    ref_opt.zero_grad()
    loss.backward()
    ref_opt.step()
    np.testing.assert_allclose(m.weight.numpy(), ref.weight.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.bias.numpy(), ref.bias.numpy(), rtol=1e-6, atol=1e-7)


def test_mixing_depends_only_on_seed_epoch_batch_and_member():
    tr = Trainer(nn.Linear(2, 2), tinycnn.optim.SGD(nn.Linear(2, 2).parameters()), None, seed=3, quiet=True,
                 mixup=0.2)
    a, b = tr._mix(1, 2, 0, 10), tr._mix(1, 2, 0, 10)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert tr._mix(1, 2, 1, 10)[0] != a[0] and tr._mix(2, 2, 0, 10)[0] != a[0]


def test_mixup_must_be_a_non_negative_number():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"mixup must be a Beta\(alpha, alpha\) parameter >= 0 \(0 = off\), got -1"):
        Trainer(m, tinycnn.optim.SGD(m.parameters()), None, mixup=-1)
    with pytest.raises(SystemExit) as e:
        main(["train", "--mixup", "-0.5"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixup") / "a"
    train_run({**QUICK, "out": str(out)}, log=None, quiet=True)
    return out


def test_setting_is_recorded_and_resume_is_bit_identical(mix_run, tmp_path):
    assert json.loads((mix_run / "config.json").read_text())["settings"]["mixup"] == 0.4
    assert_resume_is_bit_identical(QUICK, mix_run, tmp_path / "b")
