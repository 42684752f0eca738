"""benchmarks/train_step.py: one worker process per library, samples interleaved with idle waits."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import train_step  # noqa: E402
from benchmarks.reference_cnn import tinycnn_model  # noqa: E402


def test_reference_weights_fit_the_model_and_follow_torchs_init_bounds():
    w = train_step.reference_weights(0)
    model = tinycnn_model()
    model.load_state_dict(w)
    assert set(w) == set(model.state_dict())
    for name, a in w.items():
        fan_in = np.prod(w[name.replace("bias", "weight")].shape[1:])
        assert a.dtype == np.float32 and np.abs(a).max() <= 1 / np.sqrt(fan_in)
    again = train_step.reference_weights(0)
    assert all(np.array_equal(w[k], again[k]) for k in w)


def _fake_cpu(increments_ns):
    """cpu_ns stand-in: each call adds the next increment (the last one repeats)."""
    state = {"total": 0, "i": 0}

    def cpu_ns(pid):
        inc = increments_ns[min(state["i"], len(increments_ns) - 1)]
        state["i"] += 1
        state["total"] += inc
        return state["total"]
    return cpu_ns, state


def test_wait_idle_waits_until_the_worker_stops_using_cpu():
    busy = 10_000_000  # 10 ms of CPU per 1 ms window: spinning threads
    cpu_ns, state = _fake_cpu([0, busy, busy, busy, 0])
    train_step.wait_idle(1, min_s=0, window_s=0.001, cpu_ns=cpu_ns)
    assert state["i"] == 5  # first reading, three busy windows, one quiet one


def test_wait_idle_honours_the_minimum_and_the_maximum():
    cpu_ns, _ = _fake_cpu([0])
    assert train_step.wait_idle(1, min_s=0.01, window_s=0.001, cpu_ns=cpu_ns) >= 0.01
    cpu_ns, _ = _fake_cpu([10_000_000])
    waited = train_step.wait_idle(1, min_s=0, max_s=0.01, window_s=0.001, cpu_ns=cpu_ns)
    assert 0.01 <= waited < 1
    assert train_step.wait_idle(1, min_s=0.005, cpu_ns=lambda pid: None) >= 0.005


def test_cpu_ns_reads_this_process():
    if not Path(f"/proc/{os.getpid()}/task").exists():
        pytest.skip("no /proc")
    a = train_step._cpu_ns(os.getpid())
    sum(i * i for i in range(200_000))
    assert train_step._cpu_ns(os.getpid()) > a


@pytest.mark.parametrize("same_process", [False, True], ids=["workers", "same-process"])
def test_harness_runs_each_library_in_its_own_worker(tmp_path, capsys, same_process):
    out = tmp_path / "t.json"
    argv = ["--threads", "1", "--reps", "2", "--warmup", "0", "--batch", "4", "--gap", "0", "--json", str(out)]
    assert train_step.main(argv + (["--same-process"] if same_process else [])) == 0
    (res,) = json.loads(out.read_text())
    assert set(res["times"]) == set(train_step.VARIANTS)
    assert all(len(ts) == 2 and min(ts) > 0 for ts in res["times"].values())
    assert set(res["ratios"]) == ({f"{k}: tinycnn / {r}" for k in ("train", "infer")
                                   for r in ("torch", "torch channels last", "gemm floor")}
                                  | {f"{k}: gemm floor / same GEMMs in torch" for k in ("train", "infer")})
    assert res["logits_max_abs_diff"] < 1e-4
    assert len(res["gemms"]["train"]) == 9 and len(res["gemms"]["infer"]) == 3
    lib = "both" if same_process else "tinycnn"
    if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TINYCNN_THREAD_TUNING"} & set(os.environ):
        # Numba's pool was started by tinycnn (idle workers sleep), not by numba.set_num_threads
        assert res["thread_settings"][lib].get("OMP_WAIT_POLICY") == "passive"
    if same_process:
        assert set(res["worker_modules"]["both"]) >= {"tinycnn", "torch"}
    else:
        assert "torch" not in res["worker_modules"]["tinycnn"]
        assert "tinycnn" not in res["worker_modules"]["torch"]
    text = capsys.readouterr().out
    assert "ratio train: tinycnn / gemm floor" in text and "idle wait after a sample" in text
    assert "GFLOP/s through torch.matmul" in text


def test_gemm_replay_gives_the_same_products_through_numpy_and_torch():
    """Both replays of a recorded step build the same operands (layouts included) and multiply them."""
    import tinycnn
    import tinycnn.nn.functional as F
    from benchmarks.reference_cnn import random_batch
    from tinycnn.backends.cpu_numpy import record_gemms

    model = tinycnn_model()
    x, y = random_batch(4, seed=0)
    with record_gemms() as calls:
        F.cross_entropy(model(tinycnn.tensor(x)), tinycnn.tensor(y)).backward()
    assert any(c.a_t or c.b_t for c in calls)       # transposed operands are part of what is replayed
    ours, gflop = train_step.gemm_replay(calls)
    theirs, gflop_t = train_step.gemm_replay([c._asdict() for c in calls], library="torch")
    assert gflop == gflop_t == sum(c.flops for c in calls) / 1e9
    for a, b in zip(ours(), theirs(), strict=True):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-4)


def test_harness_times_resnet18_with_the_same_weights_in_both_workers(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--model", "resnet18", "--threads", "1", "--reps", "1", "--warmup", "0", "--batch", "2", "--gap", "0",
            "--lead", "0", "--json", str(out)]
    assert train_step.main(argv) == 0
    (res,) = json.loads(out.read_text())
    assert res["model"] == "resnet18"
    assert set(res["times"]) == set(train_step.VARIANTS)
    assert res["logits_max_abs_diff"] < 1e-4
    assert len(res["gemms"]["train"]) > 40          # 20 convolutions and a linear layer, 3 GEMM kinds
    assert "torch" not in res["worker_modules"]["tinycnn"]
    assert "numba" not in res["worker_modules"]["torch"]   # the twin's builder is plain PyTorch
    assert "== resnet18 CNN, threads=1" in capsys.readouterr().out


def test_model_weights_are_tinycnns_seeded_resnet18_init():
    from tinycnn import models
    w = train_step.model_weights("resnet18", 0)
    assert set(w) == set(models.get_model("resnet18", 1, 2).state_dict())
    again = train_step.model_weights("resnet18", 0)
    assert all(np.array_equal(w[k], again[k]) for k in w)
