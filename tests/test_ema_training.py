"""Training with an exponential moving average of the weights (`--ema`, Trainer(ema_decay=...))."""
import numpy as np
import pytest

import tinycnn
from _nn_compare import assert_resume_is_bit_identical
from tinycnn.data import synthetic
from tinycnn.models import get_model
from tinycnn.training import Trainer, train_run
from tinycnn.training.checkpoint import load_checkpoint
from tinycnn.serialization import load

QUICK = {"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 3, "batch_size": 32, "seed": 0,
         "ensemble": 2, "ema": 0.8}


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema") / "a"
    train_run({**QUICK, "out": str(out)}, log=None, quiet=True)
    return out


def test_checkpoints_hold_the_average_and_state_holds_both(ema_run):
    last, meta = load_checkpoint(ema_run / "last.safetensors")
    state = load(ema_run / "last.state.safetensors")
    assert int(state["ema.n_averaged"]) == 3 * 2          # 64 images of which 20% validation -> 2 steps/epoch
    differs = 0
    for k, v in last.items():
        np.testing.assert_array_equal(state[f"ema.module.{k}"], v)    # the saved model is the average
        differs += not np.array_equal(state[f"model.{k}"], v)          # ... not the live weights
    assert differs > 0


def test_resume_is_bit_identical_with_ema(ema_run, tmp_path):
    out = tmp_path / "b"
    assert_resume_is_bit_identical(QUICK, ema_run, out, column="val_auc")
    a, b = load(ema_run / "last.state.safetensors"), load(out / "last.state.safetensors")
    for k in a:
        if k.startswith("ema."):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_trainer_average_is_the_ema_of_the_live_weights():
    """After each optimizer step avg = d avg + (1 - d) w, starting from the first step's weights, with
    batch-norm running statistics averaged alike; checked against a float64 recomputation."""
    d = 0.7
    ds = synthetic.make_synthetic(n_train=48, n_val=16, n_test=16, seed=3)
    tinycnn.manual_seed(0)
    model = get_model("vgg", in_channels=1, num_classes=2)
    opt = tinycnn.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(model, opt, None, batch_size=16, quiet=True, ema_decay=d)
    seen = []
    step = opt.step

    def recording_step(*a, **k):
        out = step(*a, **k)
        seen.append({n: v.astype(np.float64) for n, v in model.state_dict().items() if v.dtype.kind == "f"})
        return out
    opt.step = recording_step
    trainer.fit(ds.train, ds.val, epochs=2, task="binary-class", log=None)
    want = dict(seen[0])
    for w in seen[1:]:
        want = {n: d * want[n] + (1 - d) * w[n] for n in want}
    got = trainer.eval_model.state_dict()
    assert len(seen) == 6
    for n, v in want.items():
        np.testing.assert_allclose(got[n], v, rtol=1e-5, atol=1e-6, err_msg=n)


def test_no_ema_means_the_live_model():
    model = get_model("simplecnn", in_channels=1, num_classes=2)
    t = Trainer(model, tinycnn.optim.SGD(model.parameters(), lr=0.1), None, quiet=True)
    assert t.averaged is None and t.eval_model is model


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_bad_decay_is_a_clear_error(bad):
    model = get_model("simplecnn", in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        Trainer(model, tinycnn.optim.SGD(model.parameters(), lr=0.1), None, ema_decay=bad)


def test_cli_rejects_a_bad_decay(capsys):
    from tinycnn.cli import main
    with pytest.raises(SystemExit):
        main(["train", "--ema", "1.5"])
    assert "--ema" in capsys.readouterr().err
