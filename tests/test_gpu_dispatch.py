"""GPU device handling, kernel-family dispatch, packaging and error messages - with the GPU absent.

Nothing here needs a GPU: CuPy arrays are stood in for by an object whose type lives in a ``cupy``
module (the dispatcher only looks at that), and "CuPy not installed" is simulated by hiding the module.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tinycnn import backends
from tinycnn.backends import cuda_common, cuda_cupy, cuda_numba

ROOT = Path(__file__).resolve().parents[1]
needs_no_gpu = pytest.mark.skipif(tinycnn.cuda.is_available(), reason="checks the behaviour without a GPU")


def primitives_in_docs() -> list[str]:
    text = (ROOT / "docs" / "kernels.md").read_text()
    names = re.findall(r"^- `(\w+)\(", text, flags=re.M)
    names += re.findall(r"and `(\w+)\(", text)
    return sorted(set(names))


class FakeCupyArray:
    """Dispatch only asks which module an array's type comes from."""


FakeCupyArray.__module__ = "cupy._core.core"


@pytest.fixture
def gpu_family():
    prev = backends.get_gpu_kernels()
    yield
    backends.set_gpu_kernels(prev)


def test_docs_list_the_primitives():
    names = primitives_in_docs()
    assert {"im2col", "col2im", "conv2d_forward", "max_pool2d_backward", "dropout_mask", "adam_step",
            "matmul", "bias_relu", "batch_norm_backward"} <= set(names)


@pytest.mark.parametrize("family,module", [("cupy", cuda_cupy), ("numba", cuda_numba)])
def test_every_primitive_dispatches_to_the_selected_family(family, module, gpu_family):
    backends.set_gpu_kernels(family)
    assert backends.get_gpu_kernels() == family
    like = FakeCupyArray()
    for name in primitives_in_docs():
        fn = backends.kernel(name, like)
        assert fn is getattr(module, name), f"{name} -> {fn.__module__}.{fn.__name__}"
    # numpy arrays still go to the CPU families whatever the GPU family is
    assert backends.kernel("im2col", np.zeros(1)).__module__.startswith("tinycnn.backends.cpu_")


def test_set_gpu_kernels_rejects_unknown_family(gpu_family):
    with pytest.raises(ValueError, match=r"family must be one of \('cupy', 'numba'\), got 'cuda'"):
        backends.set_gpu_kernels("cuda")


def _python(code: str, **env_vars) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_environment_variables_choose_family_and_gemm():
    code = ("from tinycnn import backends; from tinycnn.backends import cuda_common as c; "
            "print(backends.get_gpu_kernels(), c.gemm_policy())")
    proc = _python(code, TINYCNN_GPU_KERNELS="numba", TINYCNN_GEMM="ours")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numba", "ours"]
    proc = _python(code, TINYCNN_GPU_KERNELS="opencl")
    assert proc.returncode != 0
    assert "TINYCNN_GPU_KERNELS must be one of ('cupy', 'numba'), got 'opencl'" in proc.stderr
    proc = _python(code, TINYCNN_GEMM="fastest")
    assert proc.returncode != 0
    assert "TINYCNN_GEMM must be one of ('auto', 'ours', 'cublas'), got 'fastest'" in proc.stderr


def test_gemm_policy():
    try:
        assert cuda_common.gemm_policy() == "cublas"      # auto = cuBLAS: no timing-dependent choice
        cuda_common.set_gemm("ours")
        assert cuda_common.gemm_policy() == "ours"
        with pytest.raises(ValueError, match=r"policy must be one of \('auto', 'ours', 'cublas'\), got 'mine'"):
            cuda_common.set_gemm("mine")
    finally:
        cuda_common.set_gemm("auto")


def test_gemm_override_restores_the_policy():
    cuda_common.set_gemm("cublas")
    try:
        with cuda_common.gemm_override("ours"):
            assert cuda_common.gemm_policy() == "ours"
        assert cuda_common.gemm_policy() == "cublas"
        with pytest.raises(RuntimeError), cuda_common.gemm_override("ours"):
            raise RuntimeError("boom")
        assert cuda_common.gemm_policy() == "cublas"
    finally:
        cuda_common.set_gemm("auto")


@pytest.mark.parametrize("m,n,k", [(32, 9, 100352), (64, 288, 25088), (128, 128, 3136), (2048, 2048, 2048),
                                   (3, 2, 600), (5, 5, 511), (1, 1, 10**7)])
@pytest.mark.parametrize("bm,bk", [(64, 16), (128, 8)])
def test_gemm_split_covers_k_in_aligned_chunks(m, n, k, bm, bk):
    s, kc = cuda_common.gemm_split(m, n, k, bm, bm, bk)
    tiles = -(-m // bm) * -(-n // bm)
    if s == 1:
        assert kc == k
        assert tiles >= cuda_common.SPLITK_TARGET_BLOCKS or k < 2 * cuda_common.SPLITK_MIN_CHUNK
        return
    assert kc % bk == 0 and kc >= cuda_common.SPLITK_MIN_CHUNK
    assert (s - 1) * kc < k <= s * kc                     # every k in exactly one slice, none empty
    assert tiles * s <= 2 * cuda_common.SPLITK_TARGET_BLOCKS


def test_gemm_operands_describe_views_without_copying():
    x = np.zeros((4, 3, 5, 7), np.float32)                  # e.g. cols (N, G, K, P) of a grouped conv
    w = np.zeros((3, 2, 5), np.float32)                     # (G, O/G, K)
    out = np.zeros((4, 3, 2, 7), np.float32)
    a, b, c, g = cuda_common.gemm_operands(np, w[1], x[:, 1], out[:, 1])
    assert a.base is w and b.base is x and c.base is out    # views used in place
    assert g == cuda_common.GemmShape(batch=4, M=2, N=7, K=5, sAb=0, lda=5, sBb=3 * 5 * 7, ldb=7,
                                      sCb=3 * 2 * 7, ldc=7)
    # a transposed operand (last axis not contiguous) is copied; a 2-D product stays 2-D
    a, b, c, g = cuda_common.gemm_operands(np, np.zeros((5, 2), np.float32).T, np.zeros((5, 3), np.float32))
    assert a.flags.c_contiguous and c.shape == (2, 3) and (g.batch, g.sAb, g.sBb, g.sCb) == (1, 0, 0, 0)


def test_gemm_operands_errors_name_the_shapes():
    f32 = np.float32
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(4, 5\)"):
        cuda_common.gemm_operands(np, np.zeros((2, 3), f32), np.zeros((4, 5), f32))
    with pytest.raises(ValueError, match=r"batch sizes differ: a \(2, 2, 3\), b \(3, 3, 4\)"):
        cuda_common.gemm_operands(np, np.zeros((2, 2, 3), f32), np.zeros((3, 3, 4), f32))
    with pytest.raises(TypeError, match="one dtype, got float32 and float64"):
        cuda_common.gemm_operands(np, np.zeros((2, 3), f32), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"out must be a float32 array of shape \(2, 4\)"):
        cuda_common.gemm_operands(np, np.zeros((2, 3), f32), np.zeros((3, 4), f32), np.zeros((4, 2), f32))


def test_gemm_split_leaves_big_or_short_gemms_alone():
    assert cuda_common.gemm_split(2048, 2048, 2048, 128, 128, 8) == (1, 2048)
    assert cuda_common.gemm_split(4, 4, 300, 64, 64, 16) == (1, 300)
    assert cuda_common.gemm_split(32, 9, 100352, 64, 64, 16)[0] > 100   # conv1's weight gradient


def test_unloadable_family_says_why(monkeypatch, gpu_family):
    monkeypatch.setitem(backends._FAMILY_MODULES, "numba_cuda", "tinycnn.backends._no_such_module")
    monkeypatch.setattr(backends, "_registry", {k: v for k, v in backends._registry.items() if k[1] != "numba_cuda"})
    monkeypatch.setattr(backends, "_loaded", set(backends._loaded) - {"numba_cuda"})
    monkeypatch.setattr(backends, "_load_errors", {})
    backends.set_gpu_kernels("numba")
    with pytest.raises(RuntimeError, match=r"GPU kernel family 'numba' has no kernel 'im2col' \(No module named"):
        backends.kernel("im2col", FakeCupyArray())


@needs_no_gpu
def test_cuda_without_gpu_says_what_is_missing():
    assert tinycnn.cuda.is_available() is False
    assert tinycnn.cuda.device_count() == 0
    msg = r"no usable NVIDIA GPU.*cupy.is_available\(\) is False.*pip install 'tinycnn\[cuda13\]'.*'tinycnn\[cuda12\]'"
    t = tinycnn.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match=msg):
        t.to("cuda")
    with pytest.raises(RuntimeError, match=msg):
        t.cuda()
    with pytest.raises(RuntimeError, match=msg):
        tinycnn.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match=msg):
        tinycnn.cuda.synchronize()
    with pytest.raises(RuntimeError, match=msg):
        tinycnn.cuda.graph_capture(lambda: None)


def test_cuda_without_cupy_names_the_pip_extra(monkeypatch):
    monkeypatch.setattr(backends, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)        # makes `import cupy` raise ImportError
    assert tinycnn.cuda.is_available() is False
    msg = r"device='cuda' needs CuPy, which is not installed: pip install 'tinycnn\[cuda13\]'.*'tinycnn\[cuda12\]'"
    with pytest.raises(RuntimeError, match=msg):
        tinycnn.tensor([1.0]).to("cuda")
    with pytest.raises(RuntimeError, match=msg):
        tinycnn.cuda.synchronize()


def test_graph_capture_argument_errors():
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        tinycnn.cuda.graph_capture(3)
    with pytest.raises(ValueError, match=r"warmup must be an int >= 1 .*got 0"):
        tinycnn.cuda.graph_capture(lambda: None, warmup=0)


def test_bad_device_name():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'gpu'"):
        tinycnn.tensor([1.0]).to("gpu")


def test_float_suffix_names_argument_and_dtype():
    assert cuda_common.float_suffix(np.float32) == "f32"
    assert cuda_common.float_suffix("float64") == "f64"
    with pytest.raises(TypeError, match="x must be float32 or float64 for the GPU kernels, got dtype float16"):
        cuda_common.float_suffix(np.float16, "x")


def test_philox_seed_spreads_seeds():
    seeds = {cuda_common.philox_seed(s) for s in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**64 for s in seeds)
    assert cuda_common.philox_seed(0) != 0


def test_kernel_sources_are_found_in_the_package():
    assert (Path(tinycnn.__file__).parent / "kernels" / "im2col.cu").is_file()
    assert cuda_cupy.KERNEL_DIR.resolve() == (ROOT / "kernels").resolve()
    assert "extern \"C\"" in cuda_cupy.kernel_source("gemm.cu")


def test_wheel_ships_the_cuda_sources(tmp_path):
    """Build the wheel (in a copy of the tree, so no build/ is left in the checkout) and list its .cu files."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "tinycnn", src / "tinycnn", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "kernels", src / "kernels", ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("tinycnn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.endswith(".cu"))
    expected = sorted(f"tinycnn/kernels/{p.name}" for p in (ROOT / "kernels").glob("*.cu"))
    assert shipped == expected
    assert expected, "kernels/ has no .cu files"


@needs_no_gpu
def test_gpu_benchmark_script_without_gpu():
    """The GPU benchmark and profile import and parse their arguments here; without a GPU they say so
    and exit 2."""
    proc = _python("import runpy, sys; sys.argv = ['gpu_bench.py', '--quick', '--only', 'gemm']; "
                   "runpy.run_path('benchmarks/gpu_bench.py', run_name='__main__')")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no GPU: tinycnn.cuda.is_available() is False" in proc.stderr
    proc = _python("import runpy, sys; sys.argv = ['gpu_profile.py', '--steps', '2']; "
                   "runpy.run_path('benchmarks/gpu_profile.py', run_name='__main__')")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no GPU: tinycnn.cuda.is_available() is False" in proc.stderr
    bash = shutil.which("bash")
    if bash:
        check = subprocess.run([bash, "-n", str(ROOT / "benchmarks" / "run_gpu_checks.sh")], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stderr
