#!/usr/bin/env bash
# The GPU checks of --device cuda, as one script for a machine with a CUDA device:
# the CUDA tests (tests/test_cuda.py: CPU and CUDA outputs byte for byte, TIES within its
# tolerance, device memory) and a 1.1B CPU-vs-CUDA benchmark (benchmarks/cuda_check.py).
#
#   bash benchmarks/cuda_check.sh            # from the repository root; results under $OUT
#
# Packages newer than the machine's (our pyproject floors) come as wheels in .devwheels/
# (ignored by git), made here with pip download for Python 3.12 (see docs/performance.md, GPU);
# they go to /tmp/site, first on PYTHONPATH. The log is written as it runs (tee), so it comes
# back even when a time limit stops the script.
set -u
set -o pipefail
OUT=${OUT:-/tmp/hf-lines-cuda-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
PY=${PYTHON:-python3}
{
  echo "== machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nproc
  if ls .devwheels/*.whl >/dev/null 2>&1; then
    echo "== wheels"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devwheels/*.whl \
      && export PYTHONPATH=/tmp/site
  fi
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  $PY -c "import sys, torch, transformers, huggingface_hub, accelerate, safetensors, peft; print(sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'); \
print('transformers', transformers.__version__, 'huggingface_hub', huggingface_hub.__version__, 'accelerate', accelerate.__version__, \
'safetensors', safetensors.__version__, 'peft', peft.__version__)"
  echo "== C kernels (optional: the CPU reference then uses them)"
  if [ -z "${SKIP_BUILD:-}" ]; then
    $PY setup.py -q build_ext --inplace >"$OUT/build.txt" 2>&1 && echo built || { echo "build failed (torch path)"; tail -5 "$OUT/build.txt"; }
  fi
  $PY -c "from hf_lines.core import kernels; print('kernels available:', kernels.available())"
  echo "== tests/test_cuda.py"
  timeout ${TEST_TIMEOUT:-200} $PY -m pytest -q -s -p no:cacheprovider --durations=5 tests/test_cuda.py
  echo "pytest exit: $?"
  echo "== benchmark"
  timeout ${BENCH_TIMEOUT:-240} $PY benchmarks/cuda_check.py --out "$OUT/cuda_check.json" ${BENCH_ARGS:-}
  echo "benchmark exit: $?"
} 2>&1 | tee "$OUT/log.txt"
