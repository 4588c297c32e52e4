# syntax=docker/dockerfile:1
# The ResNet50 Thrift classification service (pipelined handler) on an NVIDIA GPU.
#
#   docker build -t torchpipe-lite .                     # seeded random weights (labels meaningless)
#   docker build -t torchpipe-lite --build-arg WEIGHTS=weights/resnet50-11ad3fa6.pth .
#   docker run --gpus all --stop-timeout 45 -p 8888:8888 -p 9090:9090 torchpipe-lite
#
# WEIGHTS is a torchvision ResNet50 state_dict inside the build context (fetch it beforehand:
# nothing is downloaded at build or run time). See deploy/README.md.
#
# The base is NVIDIA's TensorRT container: CUDA, cuDNN and TensorRT 10 for the TensorrtTensor
# backend, on Ubuntu 22.04 with Python 3.10. Another tag with TensorRT 10 and Python >= 3.10
# works the same (--build-arg BASE_IMAGE=...).
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the server needs (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY idl ./idl
COPY torchpipe_lite ./torchpipe_lite
COPY service ./service
COPY clients ./clients
# The project with its GPU extras: PyTorch (CUDA wheels), NVML for GPU figures, TensorRT's
# Python package (already present in this base image, so pip keeps it).
RUN python3 -m pip install '.[gpu,trt]'

# The model is exported once, here, to the path the default config names
# (models/resnet50.onnx, relative to /app). The weights file is mounted for this step only, so
# it does not stay in a layer. Without WEIGHTS the export says loudly that the weights are
# random. (Without any model file, the server would export one itself at first start.)
ARG WEIGHTS=""
RUN --mount=type=bind,source=.,target=/context \
    if [ -n "$WEIGHTS" ]; then \
        python3 -m service.tools.export_model --weights "/context/$WEIGHTS" --output models/resnet50.onnx; \
    else \
        python3 -m service.tools.export_model --output models/resnet50.onnx; \
    fi

# An unprivileged user; models/ stays writable for engine caches (TensorrtTensor's model::cache).
RUN useradd --system --uid 10001 --no-log-init --create-home --home-dir /home/app app \
    && chown -R app /app/models
USER app

# 8888: Thrift (the service's default port). 9090: /metrics, /health/live, /health/ready.
EXPOSE 8888 9090

# Liveness only: readiness (/health/ready) is for load balancers, which must stop sending during
# a drain without the container being restarted. The start period covers model loading and the
# CUDA-graph warm-up; urlopen fails on any status other than 2xx.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/health/live', timeout=4)"]

# SIGTERM drains: stop accepting, finish in-flight calls (up to --drain-timeout-s), exit 0.
# Give docker at least that long: `docker run --stop-timeout 45` (its default is 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["python3", "-m", "service"]
CMD ["--handler", "pipelined", "--host", "0.0.0.0", "--port", "8888", "--metrics-port", "9090", "--drain-timeout-s", "30"]
