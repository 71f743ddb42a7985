#!/usr/bin/env bash
# Device benchmark in one go: the device tests, then benchmarks/gpu.py (training and prediction
# ratios, lock-step NUTS as chains grow), writing gpu.json, gpu.md and gpu-tests.txt; then, when
# the image data are there (BNN_IMAGE_DATA, default ../shared/benchdata/images), the image
# benchmark (bnn benchmark images, Fashion-MNIST -> MNIST, every method, 3 seeds; --quick: two
# methods, one epoch on 1,000 images) into images-fashion-mnist/.
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
images="${BNN_IMAGE_DATA:-../shared/benchdata/images}"
if [ -d "$images/fashion-mnist" ] && [ -d "$images/mnist" ]; then
    if [ -n "$quick" ]; then
        sizes=(--method map --method laplace --epochs 1 --train-images 1000)
    else
        sizes=(--seeds 3)
    fi
    "$python" -m bnn.apps.cli benchmark images --train fashion-mnist --data-dir "$images" \
        --device "$device" "${sizes[@]}" --output "$output/images-fashion-mnist"
else
    echo "gpu.sh: no image data in $images (set BNN_IMAGE_DATA): image benchmark skipped"
fi
