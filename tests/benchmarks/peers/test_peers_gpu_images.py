"""The peers' GPU image stage without a GPU: which configs have one, the per-request header
check, and a batch in which one image fails (it alone fails, as in our scheduler)."""

from __future__ import annotations

import pytest

from benchmarks.peers.gpu_images import GpuImageStage, gpu_image_node
from service.service_config import SHIPPED_CONFIGS, ServiceConfigError, load_service_config
from tests.image_samples import jpeg_claiming
from torchpipe_lite.backends.base import Backend
from torchpipe_lite.errors import BackendError, InvalidInputError


class StandInDecoder(Backend):
    """Upper-cases each item's bytes; fails the call on b"raise..."; leaves b"skip" unset."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, batch):
        self.calls.append(len(batch))
        for item in batch:
            if item["data"].startswith(b"raise"):
                raise RuntimeError("device says no")
            if item["data"] != b"skip":
                item["result"] = item["data"].upper()


def _config(name: str):
    return load_service_config(SHIPPED_CONFIGS / name)


@pytest.fixture
def stage() -> tuple[GpuImageStage, StandInDecoder]:
    node = gpu_image_node(_config("resnet50_gpu_decode.toml"))
    backend = StandInDecoder()
    return GpuImageStage(node, device="cuda:0", backend=backend), backend


def test_only_a_config_that_decodes_on_the_gpu_has_a_gpu_image_stage():
    assert gpu_image_node(_config("resnet50.toml")) is None
    assert gpu_image_node(_config("resnet50_process_decode.toml")) is None
    node = gpu_image_node(_config("resnet50_gpu_decode.toml"))
    assert node is not None and node.name == "gpu_decoder"
    assert "DecodeTensor" in str(node.backend)


def test_a_gpu_decoder_among_several_image_stages_is_refused_by_name():
    with pytest.raises(ServiceConfigError, match=r"has 2 \(gpu_decoder, cpu_decoder\)"):
        gpu_image_node(_config("resnet50_gpu_decode_fallback.toml"))


def test_a_whole_batch_is_one_call(stage):
    images, backend = stage
    assert images.backend == "SyncTensor[Sequential[DecodeTensor,ResizeTensor,CvtColorTensor]]"
    assert images.run([b"a", b"b", b"c"]) == [b"A", b"B", b"C"]
    assert backend.calls == [3]


def test_a_failing_image_fails_alone_and_the_others_are_decoded(stage):
    images, backend = stage
    outcomes = images.run([b"a", b"raise", b"skip", b"d"])
    assert outcomes[0] == b"A" and outcomes[3] == b"D"
    assert isinstance(outcomes[1], BackendError) and "device says no" in str(outcomes[1])
    assert isinstance(outcomes[2], InvalidInputError) and "image 2" in str(outcomes[2])
    assert backend.calls == [4, 1, 1, 1, 1]  # the batch, then each image alone


def test_the_header_check_refuses_non_images_and_too_many_pixels(stage):
    images, _ = stage
    assert images.check(jpeg_claiming(8, 8))
    assert not images.check(b"certainly not a JPEG")
    with pytest.raises(InvalidInputError, match="max_pixels"):
        images.check(jpeg_claiming(60_000, 60_000))
