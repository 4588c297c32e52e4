"""The peers' GPU image stage: our config's nvJPEG node, run once per batch outside a pipeline.

With ``resnet50_gpu_decode.toml`` our pipeline decodes, resizes and colours a batch of JPEGs
in one call of its ``[gpu_decoder]`` node. A peer does the same work with the same backend
and parameters, built here, in its own batch step (LitServe's ``predict``, Triton's
``execute``). As in our scheduler, when a batch fails the images are decoded one by one, so
only the image at fault fails.
"""

from __future__ import annotations

from typing import Any

import torchpipe_lite as tp
from service.service_config import ServiceConfig, ServiceConfigError
from torchpipe_lite import Backend
from torchpipe_lite.errors import InvalidInputError, RequestError
from torchpipe_lite.extend import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_PIXELS_PER_BYTE,
    NodeConfig,
    check_pixels,
    param_positive,
    read_header,
    request_error,
)

#: The backend that marks an image stage as decoding on the GPU.
GPU_DECODER = "DecodeTensor"


def gpu_image_node(config: ServiceConfig) -> NodeConfig | None:
    """The config's image stage when it decodes on the GPU (its backend names
    ``DecodeTensor``), else ``None``; a GPU decoder among several image stages is refused,
    since a peer runs the image work as one step."""
    stages = [node for node in config.pipeline.nodes if node.name != config.model_node]
    if not any(GPU_DECODER in {spec.name for spec in node.backend.walk()} for node in stages):
        return None
    if len(stages) != 1:
        names = ", ".join(node.name for node in stages)
        raise ServiceConfigError(
            f"{config.path}: the peers run a GPU decoder only as the one stage before the "
            f"model; this config has {len(stages)} ({names})"
        )
    return stages[0]


class GpuImageStage:
    """One instance of an image node's backend: encoded bytes in, model-ready tensors out."""

    def __init__(self, node: NodeConfig, *, device: str, backend: Backend | None = None):
        params = {**node.params, "device": device, "instance_index": 0, "instance_num": 1}
        params.pop("device_id", None)  # the peer's worker has its device already
        self.backend = str(node.backend)
        self._node = node.name
        self._max_pixels = param_positive(params, "max_pixels", DEFAULT_MAX_PIXELS)
        self._max_pixels_per_byte = param_positive(
            params, "max_pixels_per_byte", DEFAULT_MAX_PIXELS_PER_BYTE
        )
        # ``backend``: a stand-in for tests without a GPU.
        self._stage = backend if backend is not None else tp.create_backend(node.backend, params)

    def check(self, data: bytes) -> bool:
        """The per-request check our decoder makes before decoding: whether ``data`` has an
        image header; ``InvalidInputError`` when that header declares too many pixels."""
        header = read_header(data)
        if header is None:
            return False
        check_pixels(
            header,
            self._max_pixels,
            encoded_bytes=len(data),
            max_pixels_per_byte=self._max_pixels_per_byte,
        )
        return True

    def run(self, encoded: list[bytes]) -> list[Any | RequestError]:
        """Each image decoded and prepared (a tensor on the device), or the typed error of
        that image alone, in order."""
        items: list[dict[str, Any]] = [{"data": data} for data in encoded]
        try:
            self._stage.forward(items)
        except Exception:  # one bad image fails the call: decode each alone
            items = [self._alone(data) for data in encoded]
        return [_outcome(item, position) for position, item in enumerate(items)]

    def _alone(self, data: bytes) -> dict[str, Any]:
        item: dict[str, Any] = {"data": data}
        try:
            self._stage.forward([item])
        except Exception as error:  # typed as our scheduler types a request's failure
            item = {"error": request_error(error, self._node, self.backend)}
        return item

    def close(self) -> None:
        """Frees the backend."""
        self._stage.close()


def _outcome(item: dict[str, Any], position: int) -> Any | RequestError:
    if "error" in item:
        return item["error"]
    if "result" not in item:  # the decoder leaves undecodable bytes without a result
        return InvalidInputError(f"image {position} of the batch could not be decoded")
    return item["result"]
