#!/usr/bin/env bash
# The one GPU check: every GPU-specific path of gammaface, timed against its peer in the same
# run, in at most 8 minutes on one GPU. Run it where gammaface is installed with the `gpu` extra
# (the gammaface:ray2.60.0-gpu image, or `pip install -e '.[gpu]'`):
#   benchmarks/gpu_check.sh [OUT_DIR]
# 1. The GMM on the GPU (torch EM, cuML k-means++ where installed) against scikit-learn:
#    one K = 4 fit from the same start at N = 100,000, d = 12,288 (64 x 64 x 3 latents), then
#    the whole K = 1..11 BIC search as the gmm_search stage runs it, at N = 20,000, d = 3,072
#    (scikit-learn's search at full size would not fit the 8 minutes).
# 2. DDPM training steps per second at 64 px in bf16 autocast (the `64` preset, one GPU worker
#    through Ray Train), and DDIM-50 generation images per second at 64 px against diffusers'
#    DDIMPipeline on the same UNet.
# Each part has its own time limit, so one slow part cannot take the others' time; every
# figure is printed and kept in OUT_DIR/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/gammaface-gpu-check}}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
# a Ray head this script starts for itself: no token left by an earlier one switches auth on
export RAY_AUTH_MODE=disabled

part() {  # part SECONDS TITLE COMMAND...
  local limit=$1 title=$2; shift 2
  echo "== $title (limit ${limit} s)" | tee -a "$LOG"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -E '^\(|INFO|WARNING' | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "-- $title: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

: > "$LOG"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG"
import torch
assert torch.cuda.is_available(), "no CUDA device: this check is for a GPU machine"
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
try:
    import cuml
    print(f"cuML {cuml.__version__}: k-means++ starts on the GPU")
except ImportError:
    print("cuML not installed: k-means++ starts in torch")
PY
part 200 "GMM fit, N 100000, d 12288" "$PY" benchmarks/gmm_bic.py --device cuda --n 100000 --d 12288 --skip-search
part 110 "GMM BIC search K 1..11, N 20000, d 3072" "$PY" benchmarks/gmm_bic.py --device cuda --n 20000 --d 3072 --skip-fit
part 150 "DDPM 64 px: training bf16 and DDIM-50 generation" "$PY" benchmarks/ddpm_train.py --device cuda \
  --preset 64 --resolution 64 --steps 200 --batch 64 --sample-batch 256 --sample-steps 50 --workers 1
echo "figures in $LOG"
