"""Tests of the Numba CUDA kernels under Numba's CUDA simulator.

They only run in a process started with ``NUMBA_ENABLE_CUDASIM=1`` (the variable must be set before
numba.cuda is first imported, so it cannot be switched on inside a test session that has already
imported numba). ``tests/test_gpu_cuda_sim.py`` starts that process as part of the normal suite; to
run them directly: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda_sim -q``.
"""
import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    import numba

    if not numba.config.ENABLE_CUDASIM:
        raise RuntimeError("NUMBA_ENABLE_CUDASIM=1 is set but numba was configured before it: "
                           "run tests/cuda_sim in a fresh process")
