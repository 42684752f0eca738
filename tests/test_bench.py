"""Smoke tests of the benchmark harness (tinycnn.bench): checking before timing, JSON, plots, CLI."""
import os
import json
import math

import numpy as np
import pytest

from tinycnn import bench
from tinycnn.bench import opcases, runner, scaling, timing



@pytest.fixture(autouse=True)
def _restore_kernel_families():
    """The harness switches process-wide kernel families; later tests must not inherit them."""
    from tinycnn import backends
    cpu, gpu = backends.get_cpu_kernels(), backends.get_gpu_kernels()
    yield
    backends.set_cpu_kernels(cpu)
    backends.set_gpu_kernels(gpu)


def test_summarize_median_and_iqr():
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["q25"] == 2.0 and s["q75"] == 4.0 and s["iqr"] == 2.0
    assert s["min"] == 1.0 and s["n"] == 5
    assert timing.summarize([])["median"] is None


def test_interleaved_alternates_and_rotates_order():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "c": lambda: calls.append("c")}
    res = timing.interleaved(fns, reps=3, warmup=0, min_sample_s=0.0, max_number=1)
    assert all(res[k]["n"] == 3 and res[k]["number"] == 1 for k in fns)
    timed = calls[6:]   # per impl: one cold call and one calibration call come first
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_interleaved_rejects_bad_reps():
    with pytest.raises(ValueError, match="reps must be >= 1, got 0"):
        timing.interleaved({"a": lambda: None}, reps=0)


def _toy_case(shift=0.0):
    def make(rng):
        return {"x": rng.standard_normal((4, 5)).astype(np.float32)}
    return opcases.Case("toy", "primitive", "4x5", {}, make, tiny=None, api=None, torch=None, bytes=160.0)


def test_wrong_implementation_is_reported_and_never_timed():
    case = _toy_case()
    timed = {"ok": 0, "bad": 0}

    def build(name, delta):
        def b(i):
            def call():
                timed[name] += 1
                return (i["x"] * 2 + delta,)
            return call
        return b
    impls = [runner.Impl("numpy", lambda i: (lambda: (i["x"] * 2,))),
             runner.Impl("ok", build("ok", 0.0)), runner.Impl("bad", build("bad", 1e-2)),
             runner.Impl("missing", None, note="no kernel"),
             runner.Impl("torch", lambda i: (lambda: (i["x"] + i["x"],)), peer=True)]
    rec = runner.run_case(case, impls, timing=dict(reps=3, warmup=0, min_sample_s=0.0, max_number=1))
    assert rec["reference"] == "torch"
    assert rec["impls"]["bad"]["status"] == "wrong"
    assert "max |error|" in rec["impls"]["bad"]["message"]
    assert timed["bad"] == 1          # the one correctness call, no timing
    assert "median" not in rec["impls"]["bad"]
    assert rec["impls"]["missing"]["status"] == "unavailable"
    assert rec["impls"]["ok"]["status"] == "ok" and rec["impls"]["ok"]["n"] == 3
    assert timed["ok"] == 1 + 1 + 1 + 3   # correctness check, cold call, calibration, three samples
    assert rec["impls"]["ok"]["ratio_vs_torch"] > 0
    assert rec["impls"]["ok"]["gbps"] > 0


def test_check_outputs_catches_shape_dtype_and_index_mismatch():
    case = opcases.Case("t", "primitive", "", {}, None, None, None, None, int_outputs=(1,))
    x = np.ones((2, 3), np.float32)
    idx = np.arange(6).reshape(2, 3)
    assert runner.check_outputs((x, idx), (x, idx), case)[0]
    ok, msg, _ = runner.check_outputs((x.astype(np.float64), idx), (x, idx), case)
    assert not ok and "dtype float64, expected float32" in msg
    ok, msg, _ = runner.check_outputs((x[:1], idx), (x, idx), case)
    assert not ok and "shape" in msg
    ok, msg, _ = runner.check_outputs((x, idx[:, ::-1].copy()), (x, idx), case)
    assert not ok and "indices differ" in msg


def _finite_numbers(obj):
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


@pytest.mark.parametrize("flags,want", [("fpu sse4_2 avx avx2 fma avx512f avx512bw", "AVX-512"),
                                         ("fpu sse4_2 avx avx2 fma", "AVX2"), ("fpu sse4_2 avx", "AVX"),
                                         ("fpu sse2", "")])
def test_simd_names_the_widest_vector_extension(tmp_path, flags, want):
    from tinycnn.bench.machine import _simd
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert _simd(str(info)) == want
    assert _simd(str(tmp_path / "missing")) == ""


def test_quick_ops_run_writes_json_table_and_png(tmp_path):
    pytest.importorskip("torch")
    res = bench.run(quick=True, out_dir=tmp_path, sections=("ops",),
                    ops=["max_pool2d_backward", "cross_entropy_forward"],
                    timing=dict(reps=3, warmup=0, min_sample_s=0.001, budget_s=0.5, gap_s=0.0), quiet=True)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["suite"] == "quick" and _finite_numbers(data)
    for key in ("machine", "ceilings", "ops", "loadavg_start", "seconds"):
        assert key in data
    assert data["ceilings"]["gemm_gflops"] > 0 and data["ceilings"]["bandwidth_gbps"] > 0
    assert {"cpu", "simd", "usable_cores", "versions", "blas"} <= set(data["machine"])
    ops = {r["op"] for r in data["ops"]}
    assert ops == {"max_pool2d_backward", "cross_entropy_forward"}
    for rec in data["ops"]:
        assert rec["reference"] == "torch"
        torch_rec = rec["impls"]["torch"]
        assert torch_rec["n"] >= 3 and len(torch_rec["samples"]) == torch_rec["n"]
        numpy_rec = rec["impls"]["numpy"]
        # every timed implementation was compared with the reference first
        assert numpy_rec["status"] == "ok" and numpy_rec["max_rel_err"] < 1e-3 and numpy_rec["ratio_vs_torch"] > 0
        assert numpy_rec["median"] > 0 and numpy_rec["q25"] <= numpy_rec["median"] <= numpy_rec["q75"]
    png = tmp_path / "ops_ratio.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in data["plots"]
    assert "max_pool2d_backward" in (tmp_path / "table.txt").read_text()
    assert res["ops"][0]["op"] == data["ops"][0]["op"]


def test_run_leaves_the_kernel_families_as_it_found_them(tmp_path):
    """The suite switches the process-wide kernel families while it times them; it must restore them."""
    from tinycnn import backends
    backends.set_cpu_kernels("numba")
    bench.run(quick=True, out_dir=tmp_path, sections=("ops",), ops=["max_pool2d_backward"], use_torch=False,
              plots=False, timing=dict(reps=2, warmup=0, min_sample_s=0.001, budget_s=0.2, gap_s=0.0), quiet=True)
    assert backends.get_cpu_kernels() == "numba"


def test_scaling_worker_reports_time_and_memory():
    r = scaling.worker({"impl": "tinycnn", "family": "numpy", "batch": 2, "input_size": 28, "steps": 1,
                        "warmup": 1})
    assert r["median_s"] > 0 and r["images_per_s"] > 0
    assert r["loop_peak_rss_mb"] >= r["base_rss_mb"] > 0
    assert r["step_extra_mb"] >= 0


def test_main_rejects_unknown_section(capsys):
    assert bench.main(["--only", "bogus", "--out", "unused-dir"]) == 2
    err = capsys.readouterr().err
    assert "sections must be among" in err and "bogus" in err


def test_main_rejects_unknown_op_before_measuring(capsys, tmp_path):
    assert bench.main(["--ops", "conv2d_forward,nosuch", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "unknown op name(s) nosuch" in err and "conv2d_forward" in err
    assert not (tmp_path / "out").exists()      # rejected before any measurement or output


def test_progress_lines_stay_off_when_stdout_is_not_a_terminal(capsys, tmp_path):
    bench.run(quick=True, out_dir=tmp_path, sections=("ops",), ops=["max_pool2d_backward"], use_torch=False,
              plots=False, timing=dict(reps=2, warmup=0, min_sample_s=0.001, budget_s=0.2, gap_s=0.0))
    assert "[bench]" not in capsys.readouterr().err


def test_model_steps_checked_against_torch_then_timed():
    torch = pytest.importorskip("torch")
    from tinycnn.bench import endtoend, report
    recs = endtoend.run_model_case(dict(model="simplecnn", batch=2, input_size=28, reps=1), torch=torch,
                                   families=("numpy",), modes=("train",))
    (rec,) = recs
    ours = rec["impls"]["numpy"]
    assert rec["reference"] == "torch"
    assert ours["status"] == "ok" and ours["max_rel_err"] < 2e-3      # logits, loss and all gradients
    assert ours["n"] == 1 and ours["ratio_vs_torch"] > 0 and ours["cold_fwd_bwd_s"] > 0
    assert "simplecnn" in report.e2e_table(recs) and "first forward+backward" in report.cold_table(recs)


def test_set_threads_starts_numbas_pool_with_sleeping_workers():
    """bench's --threads must not let numba.set_num_threads start Numba's pool with spinning workers
    (they took the other core from every GEMM): tinycnn starts it first, with OMP_WAIT_POLICY=passive."""
    import subprocess
    import sys
    code = ("import json, tinycnn._threads as t, tinycnn.bench.machine as m; got = m.set_threads(1); "
            "print(json.dumps([t.applied(), got]))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TINYCNN_THREAD_TUNING")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    applied, got = json.loads(res.stdout.strip().splitlines()[-1])
    assert applied.get("OMP_WAIT_POLICY") == "passive" and got["numba"] == 1


def test_torch_replica_script_trains_all_three_variants(tmp_path, data_dir):
    """benchmarks/torch_replica.py: the same batches through tinycnn and PyTorch; the PyTorch twin of the
    VGG starts from tinycnn's weights exactly and gives the same eval output for them."""
    import subprocess
    import sys

    import torch

    from tinycnn.models import get_model
    sys.path.insert(0, str(bench_root().parent))
    from benchmarks import torch_replica

    ours = get_model("vgg", in_channels=1, num_classes=2).eval()
    twin = torch_replica.torch_vgg(1, 2)
    twin.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(3, 1, 28, 28)).astype(np.float32)
    import tinycnn
    np.testing.assert_allclose(twin.eval()(torch.tensor(x)).detach().numpy(), ours(tinycnn.tensor(x)).numpy(),
                               rtol=1e-4, atol=1e-5)
    res = subprocess.run([sys.executable, str(bench_root() / "torch_replica.py"), "--data-dir", str(data_dir),
                          "--seeds", "0", "--epochs", "2", "--out", str(tmp_path), "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "torch_replica.json").read_text())
    assert set(out["runs"]) == {"tinycnn", "torch_same_init", "torch_default_init"}
    for runs in out["runs"].values():
        assert len(runs[0]["history"]) == 2 and 0 <= runs[0]["val_auc_2nd_half"] <= 1


def bench_root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1] / "benchmarks"
