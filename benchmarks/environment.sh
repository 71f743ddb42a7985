#!/usr/bin/env bash
# The benchmark environment: bnn with the peers its benchmarks compare against (MAPIE, TorchCP,
# laplace-torch, bayesian-torch, NumPyro). None of them is a dependency of bnn.
#
#   bash benchmarks/environment.sh [DIR]      (default: .venv-bench; then DIR/bin/python ...)
#
# torch stays at the project's pin (a constraints file keeps every peer's resolver from replacing
# it); torchvision, which some peers pull in, is removed: the PyPI build does not import beside
# the CPU torch. TorchCP needs torchsort only for training losses the benchmarks do not use, and
# torchsort does not build without a compiler toolchain: a stub that raises stands in for it.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-.venv-bench}
python3 -m venv "$ENV"
PIP=("$ENV/bin/pip" install -q)
CONSTRAINTS="$ENV/constraints.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"
"${PIP[@]}" -c "$CONSTRAINTS" torch==2.13.0 -e ".[dev]"
"${PIP[@]}" -c "$CONSTRAINTS" "mapie==1.6.0" scikit-learn laplace-torch numpyro jax pandas \
    torch_geometric transformers
"${PIP[@]}" --no-deps "torchcp==1.2.1" bayesian-torch
"$ENV/bin/pip" uninstall -q -y torchvision || true
SITE=$("$ENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$SITE/torchsort"
cat > "$SITE/torchsort/__init__.py" <<'STUB'
"""A stand-in for torchsort in bnn's benchmark environment: TorchCP imports it for training
losses only, which the benchmarks do not use."""


def soft_rank(*args, **kwargs):
    raise NotImplementedError("torchsort is a stub in this benchmark environment")


soft_sort = soft_rank
STUB
"$ENV/bin/python" -c "import mapie, torchcp, laplace, numpyro; print('benchmark environment ready:', '$ENV')"
