"""Pipeline configs the service tests write: a cheap one for CI, and one with a slow stage."""

from __future__ import annotations

from pathlib import Path

SLEEP_MS = 100  # well above the model stage's time per request on 2 busy cores


def cheap_config(tmp_path: Path, model: Path) -> Path:
    """ResNet18 (``model``) at 64x64 behind two-instance image stages: quick on a CPU, batching."""
    path = tmp_path / "cheap.toml"
    path.write_text(
        f"""
batching_timeout = 2

[cpu_decoder]
backend = "DecodeMat"
instance_num = 2
max = 1
next = "cpu_posdecoder"

[cpu_posdecoder]
backend = "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]"
instance_num = 2
resize_h = 64
resize_w = 64
color = "rgb"
next = "resnet50"

[resnet50]
backend = "TorchTensor"
model = "{model}"
max = 8
instance_num = 2
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
"""
    )
    return path


def slow_config(tmp_path: Path, model: Path, **slow_keys: object) -> Path:
    """The service's pipeline with a one-instance Sleep stage before the model."""
    extra = "".join(f"{key} = {value}\n" for key, value in slow_keys.items())
    path = tmp_path / "slow.toml"
    path.write_text(
        f"""
[cpu_decoder]
backend = "DecodeMat"
instance_num = 2
next = "cpu_posdecoder"

[cpu_posdecoder]
backend = "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]"
resize_h = 64
resize_w = 64
color = "rgb"
next = "slow"

[slow]
backend = "Sleep"
sleep_ms = {SLEEP_MS}
instance_num = 1
{extra}next = "resnet50"

[resnet50]
backend = "TorchTensor"
model = "{model}"
max = 4
mean = "123.675, 116.28, 103.53"
std = "58.395, 57.120, 57.375"
"""
    )
    return path
