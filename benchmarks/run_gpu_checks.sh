#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the gpu-marked tests, then the GPU benchmarks, in one go.
#   bash benchmarks/run_gpu_checks.sh [OUT_DIR]      (OUT_DIR defaults to bench-results)
# Environment: PYTHON (default python), PYTEST_ARGS (e.g. "-n 8" with pytest-xdist), GPU_BENCH_ARGS.
# Exit status: non-zero when the tests or the benchmarks failed.
set -u
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu_info.txt" || true
"${PYTHON:-python}" -c "import cupy, numba, torch; print('cupy', cupy.__version__, '| numba', numba.__version__, '| torch', torch.__version__, '| torch.cuda', torch.cuda.is_available())" 2>&1 | tee -a "$out/gpu_info.txt"

start=$(date +%s)
"${PYTHON:-python}" -m pytest -m gpu -q ${PYTEST_ARGS:-} -p no:cacheprovider -W ignore::DeprecationWarning --durations=10 tests 2>&1 | tee "$out/pytest_gpu.txt"
tests_rc=${PIPESTATUS[0]}
echo "pytest -m gpu: exit $tests_rc after $(( $(date +%s) - start )) s"

start=$(date +%s)
"${PYTHON:-python}" benchmarks/gpu_bench.py ${GPU_BENCH_ARGS:-} --out "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "gpu_bench: exit $bench_rc after $(( $(date +%s) - start )) s"

[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
