"""Runs tests/cuda_sim (the Numba CUDA kernels under the CUDA simulator) in a fresh process.

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, and this session has already
imported numba, so the simulator tests get their own interpreter with the variable set.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_numba_cuda_kernels_under_simulator():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("this session already runs with the simulator: tests/cuda_sim is collected directly")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/cuda_sim", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::DeprecationWarning"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    m = re.search(r"(\d+) passed", out)
    assert m and int(m.group(1)) >= 40, out[-3000:]      # the simulator tests really ran
    assert "skipped" not in out and "failed" not in out, out[-3000:]
