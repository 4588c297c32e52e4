#!/usr/bin/env bash
# Fetch the packages the GPU box lacks (it has torch, torchvision, onnx, opencv, tqdm, pytest
# but no network) into .whl/, for Python 3.12 on x86_64. Run where pip reaches PyPI.
# nvImageCodec (and the libnvjpeg.so.13 its JPEG backends load) are for benchmarks.gpu_ceiling's
# decoder rows; py-spy samples the GPU core for benchmarks.core_budget; both install under nvidia/ as namespace packages beside torch's CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 \
  -d .whl onnx2torch==1.5.15 prometheus-client==0.26.0 nvidia-ml-py psutil==7.2.2 \
  nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43 py-spy==0.4.3
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl thrift==0.25.0
ls -l .whl
