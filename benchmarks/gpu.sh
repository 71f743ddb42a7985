#!/usr/bin/env bash
# Device benchmark in one go: the device tests, then benchmarks/gpu.py (training and prediction
# ratios, lock-step NUTS as chains grow), writing gpu.json, gpu.md and gpu-tests.txt.
#
#   benchmarks/gpu.sh                               # on a CUDA machine, about 5 minutes
#   benchmarks/gpu.sh --device cpu --quick          # the dry run CI executes
#   benchmarks/gpu.sh --output DIR                  # where the results go (benchmarks/results)
#
# PYTHON selects the interpreter (default: python3).
set -euo pipefail
device=cuda
quick=""
output=benchmarks/results
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick="--quick"; shift ;;
        --output) output="$2"; shift 2 ;;
        *) echo "gpu.sh: unknown argument $1 (expected --device, --quick, --output)" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
mkdir -p "$output"
"$python" -m pytest -q -p no:cacheprovider tests/test_device.py -k "$device" 2>&1 | tee "$output/gpu-tests.txt"
"$python" benchmarks/gpu.py --device "$device" $quick --output "$output"
