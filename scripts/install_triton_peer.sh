#!/usr/bin/env bash
# The Triton peer's runtime for benchmarks.peers, into the venv: the tritonserver binary of the
# nvidia-pytriton wheel (Linux x86_64, glibc >= 2.35) without its Python dependencies (it pins
# numpy < 2, which torch and OpenCV here do not want), and NumPy < 2 in .venv/triton-stub-site
# for the wheel's Python backend stub, which reads and writes tensors wrongly with NumPy 2 (with
# the ml_dtypes that onnx needs, in its oldest release, 0.5.4, which still runs on NumPy 1). The stub
# runs on the system's libpython of this Python's version (Debian: the libpython3.X package).
# A failure is reported, not fatal: benchmarks.peers then skips Triton, saying why.
set -u
PY=${PY:-.venv/bin/python}
if ! "$PY" -m pip install -q --no-deps nvidia-pytriton; then
  echo "could not install nvidia-pytriton: benchmarks.peers will skip the Triton peer"
  exit 0
fi
"$PY" -m pip install -q --no-deps --upgrade --target .venv/triton-stub-site "numpy<2" "ml_dtypes==0.5.4" \
  || echo "could not install numpy<2 for the Triton stub: the Triton peer may fail to start"
version=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if ! ldconfig -p 2>/dev/null | grep -q "libpython${version}.so.1.0"; then
  echo "no system libpython${version}.so.1.0: the Triton stub needs it (apt-get install libpython${version})"
fi
exit 0
