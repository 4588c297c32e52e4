"""The tensor image stages' arithmetic, checked on CPU tensors against OpenCV: EXIF
orientation, ResizeTensor, CvtColorTensor. (nvJPEG itself is covered by tests/gpu.)"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from tests.image_samples import IMAGES_DIR
from torchpipe_lite.backends.image.image_gpu import apply_orientation
from torchpipe_lite.backends.image.image_header import read_header
from torchpipe_lite.errors import ConfigError, InvalidInputError


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_opencv(orientation: int) -> None:
    pil = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = pil.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    pil.fromarray(pixels).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    data = np.frombuffer(buffer.getvalue(), np.uint8)
    upright = cv2.imdecode(data, cv2.IMREAD_COLOR)  # OpenCV applies EXIF orientation
    stored = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert read_header(buffer.getvalue()).orientation == orientation
    turned = apply_orientation(torch.from_numpy(stored).permute(2, 0, 1), orientation)
    np.testing.assert_array_equal(turned.permute(1, 2, 0).numpy(), upright)


@pytest.mark.parametrize("size", [(224, 224), (100, 300), (600, 451)])
def test_resize_tensor_is_within_two_levels_of_resize_mat(size: tuple[int, int]) -> None:
    bgr = cv2.imread(str(IMAGES_DIR / "chelsea.jpg"), cv2.IMREAD_COLOR)
    height, width = size
    expected = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    tensor = torch.from_numpy(bgr).permute(2, 0, 1).unsqueeze(0)
    out = {"data": tensor}
    tp.create_backend("ResizeTensor", {"resize_h": height, "resize_w": width}).forward([out])
    resized = out["result"]
    assert resized.dtype == torch.uint8 and tuple(resized.shape) == (1, 3, height, width)
    difference = np.abs(resized[0].permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
    assert difference.max() <= 2


def test_resize_tensor_keeps_float_dtype_and_same_size_inputs() -> None:
    backend = tp.create_backend("ResizeTensor", {"resize_h": 4, "resize_w": 6})
    same = torch.rand(1, 3, 4, 6)
    batch = [{"data": same}, {"data": torch.rand(3, 8, 12)}]
    backend.forward(batch)
    assert batch[0]["result"] is same
    assert batch[1]["result"].dtype == torch.float32 and batch[1]["result"].shape == (1, 3, 4, 6)


def test_cvtcolor_tensor_swaps_only_when_needed() -> None:
    rgb = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)
    backend = tp.create_backend("CvtColorTensor", {"color": "bgr"})
    untagged = {"data": rgb}  # tensors default to RGB
    tagged = {"data": rgb, "color": "bgr"}
    backend.forward([untagged, tagged])
    torch.testing.assert_close(untagged["result"], rgb.flip(1))
    assert tagged["result"] is rgb
    assert untagged["color"] == tagged["color"] == "bgr"


def test_tensor_stages_reject_non_images() -> None:
    for expression, params in [
        ("ResizeTensor", {"resize_h": 4, "resize_w": 4}),
        ("CvtColorTensor", {"color": "rgb"}),
    ]:
        backend = tp.create_backend(expression, params)
        for data in (b"bytes", np.zeros((4, 4, 3), np.uint8), torch.zeros(2, 3, 4, 4)):
            with pytest.raises(InvalidInputError, match="image tensor"):
                backend.forward([{"data": data}])
    with pytest.raises(InvalidInputError, match="1x3xHxW"):
        tp.create_backend("CvtColorTensor", {"color": "rgb"}).forward(
            [{"data": torch.zeros(1, 1, 4, 4)}]
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_decode_tensor_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        tp.create_backend("DecodeTensor", {})


def test_resize_tensor_batches_same_size_images_with_the_same_pixels_as_alone() -> None:
    generator = torch.Generator().manual_seed(3)
    images = [
        torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (3, 50, 20), dtype=torch.uint8, generator=generator),
        torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8, generator=generator),
        torch.rand(1, 3, 30, 40, generator=generator),  # same size, other dtype: its own group
        torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8, generator=generator),
    ]
    backend = tp.create_backend("ResizeTensor", {"resize_h": 16, "resize_w": 24})
    together = [{"data": image} for image in images]
    backend.forward(together)
    for image, item in zip(images, together, strict=True):
        alone = {"data": image}
        backend.forward([alone])
        assert item["result"].shape == (1, 3, 16, 24) and item["result"].dtype == image.dtype
        torch.testing.assert_close(item["result"], alone["result"], rtol=0, atol=0)
    # the three uint8 30x40 images were resized as one batch: their results share storage
    shared = {together[i]["result"].untyped_storage().data_ptr() for i in (0, 2, 4)}
    assert len(shared) == 1


def test_resize_tensor_refuses_a_batch_with_a_non_image_before_resizing_anything() -> None:
    backend = tp.create_backend("ResizeTensor", {"resize_h": 4, "resize_w": 4})
    batch = [{"data": torch.zeros(1, 3, 8, 8, dtype=torch.uint8)}, {"data": b"not an image"}]
    with pytest.raises(InvalidInputError, match="image tensor"):
        backend.forward(batch)
    assert "result" not in batch[0]


def test_sync_tensor_refuses_a_stream_priority_that_is_not_an_integer():
    import torchpipe_lite as tp

    with pytest.raises(ValueError, match="stream_priority"):
        tp.create_backend("SyncTensor[Identity]", {"stream_priority": "high"})
    tp.create_backend("SyncTensor[Identity]", {"stream_priority": -1}).close()


@pytest.mark.parametrize("size", [(224, 224), (100, 300), (600, 451)])
def test_batch_resize_gives_each_image_what_interpolate_gives_it_alone(size):
    from torchvision.ops import roi_align  # noqa: F401  (resize_bilinear needs torchvision)

    from torchpipe_lite.backends.image.batch_resize import resize_bilinear

    generator = torch.Generator().manual_seed(0)
    shapes = [(480, 640), (300, 451), (512, 384)]
    images = [
        torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=generator) for hw in shapes
    ]
    resized = resize_bilinear(images, *size)
    assert resized.dtype == torch.uint8 and tuple(resized.shape) == (3, 3, *size)
    for index, image in enumerate(images):
        alone = torch.nn.functional.interpolate(
            image[None].float(), size=size, mode="bilinear", align_corners=False
        )
        difference = resized[index].int() - alone[0].round().clamp(0, 255).int()
        assert difference.abs().max() <= 1, shapes[index]


def test_the_gpu_image_stage_refuses_a_corrupt_jpeg_in_a_batch_and_keeps_the_rest():
    """The GPU image stage's own logic on the CPU, nvJPEG and the device search stood in for
    (benchmarks.stage_python): results, refusals and typed errors per batch."""
    from benchmarks.stage_python import OUTPUT_SIDE, SHRINK, stand_in_stage
    from torchpipe_lite.values import Color

    stage = stand_in_stage()
    photos = [path.read_bytes() for path in sorted(IMAGES_DIR.glob("*.jpg"))]
    items = [{"data": photo} for photo in photos] + [{"data": b"not an image at all"}]
    stage.forward(items)
    side = OUTPUT_SIDE // SHRINK
    for item in items[:-1]:
        assert tuple(item["result"].shape) == (1, 3, side, side)
        assert item["color"] is Color.RGB
    assert "result" not in items[-1]  # not an image: no result, nothing raised
    start = photos[0].index(b"\xff\xda") + 200
    corrupt = photos[0][:start] + b"\xff\x42" + photos[0][start + 2 :]
    with pytest.raises(InvalidInputError, match="corrupt JPEG data: reserved marker 0xFF42"):
        stage.forward([{"data": photo} for photo in photos] + [{"data": corrupt}])
    bomb = photos[0][:2] + b"\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03" + b"\x00" * 9
    with pytest.raises(InvalidInputError, match="60000x60000"):
        stage.forward([{"data": photos[1]}, {"data": bomb}])
