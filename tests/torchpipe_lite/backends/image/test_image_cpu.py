"""The CPU image stages give OpenCV's pixels, keep every image 3-channel, and survive hostile
bytes without decoding absurd sizes."""

from __future__ import annotations

import io
import struct
from typing import Any

import cv2
import numpy as np
import pytest
import torch

import torchpipe_lite as tp
from tests.image_samples import GRAYSCALE_PHOTOS, IMAGES_DIR, jpeg_claiming, png_header_claiming
from torchpipe_lite.backends.image import image_cpu
from torchpipe_lite.errors import ConfigError, InvalidInputError

PREPROCESS = "Sequential[ResizeMat,CvtColorMat,Mat2Tensor]"


def run(expression: str, data: Any, **params: Any) -> dict[str, Any]:
    """Run one request through a freshly created backend; returns the request dict."""
    item = {"data": data}
    tp.create_backend(expression, params).forward([item])
    return item


def decode(data: Any, **params: Any) -> dict[str, Any]:
    return run("DecodeMat", data, **params)


def test_decode_matches_opencv_by_hand(photo_bytes: dict[str, bytes]) -> None:
    for name, data in photo_bytes.items():
        item = decode(data)
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert item["color"] == "bgr"
        assert item["result"].dtype == np.uint8 and item["result"].shape[2] == 3, name
        np.testing.assert_array_equal(item["result"], expected, err_msg=name)


@pytest.mark.parametrize("name", GRAYSCALE_PHOTOS)
def test_grayscale_jpegs_come_out_three_channel(name: str) -> None:
    data = (IMAGES_DIR / name).read_bytes()
    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert gray.ndim == 2, "the sample is a one-channel JPEG"
    image = decode(data)["result"]
    assert image.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_png_with_alpha_drops_it() -> None:
    bgra = np.random.default_rng(0).integers(0, 256, (17, 23, 4), dtype=np.uint8)
    image = decode(cv2.imencode(".png", bgra)[1].tobytes())["result"]
    np.testing.assert_array_equal(image, bgra[:, :, :3])


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    rng = np.random.default_rng(1)
    color16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    image = decode(cv2.imencode(".png", color16)[1].tobytes())["result"]
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, (color16 >> 8).astype(np.uint8))
    gray16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    image = decode(cv2.imencode(".png", gray16)[1].tobytes())["result"]
    assert image.shape == (9, 11, 3)
    np.testing.assert_array_equal(image[:, :, 1], (gray16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".tiff", ".ppm"])
def test_other_formats_decode(ext: str) -> None:
    bgr = np.random.default_rng(2).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # 101: lossless
    image = decode(cv2.imencode(ext, bgr, params)[1].tobytes())["result"]
    np.testing.assert_array_equal(image, bgr)


def test_exif_orientation_is_applied() -> None:
    pil = pytest.importorskip("PIL.Image")
    exif = pil.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise
    buffer = io.BytesIO()
    pil.new("RGB", (40, 10), (0, 0, 255)).save(buffer, "JPEG", exif=exif.tobytes())
    assert decode(buffer.getvalue())["result"].shape == (40, 10, 3)


def test_bytes_like_inputs(photo_bytes: dict[str, bytes]) -> None:
    data = photo_bytes["chelsea.jpg"]
    expected = decode(data)["result"]
    for variant in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(decode(variant)["result"], expected)
    np.testing.assert_array_equal(
        decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))["result"], expected
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 100, b"GET / HTTP/1.1\r\n\r\n", np.random.default_rng(4).bytes(5000)],
    ids=["empty", "zeros", "text", "random"],
)
def test_non_images_end_without_result(data: bytes) -> None:
    item = decode(data)
    assert "result" not in item and "color" not in item


def test_truncated_jpeg_gives_no_result_or_the_declared_image(
    photo_bytes: dict[str, bytes],
) -> None:
    data = photo_bytes["coffee.jpg"]
    expected_shape = decode(data)["result"].shape
    for keep in (2, 20, 200, len(data) // 2, len(data) - 10):
        item = decode(data[:keep])
        if "result" in item:  # libjpeg fills what is missing: the size is still the header's
            assert item["result"].shape == expected_shape


def test_corrupt_scan_data_never_crashes(photo_bytes: dict[str, bytes]) -> None:
    data = photo_bytes["chelsea.jpg"]
    scan = data.index(b"\xff\xda")
    rng = np.random.default_rng(5)
    refused = 0
    for _ in range(20):
        corrupt = bytearray(data)
        for position in rng.integers(scan + 20, len(data) - 2, size=30):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            item = decode(bytes(corrupt))
        except InvalidInputError as error:  # corrupt scan data seen (jpeg_scan): typed refusal
            assert "corrupt JPEG data" in str(error)
            refused += 1
            continue
        assert "result" not in item or item["result"].shape == (300, 451, 3)
    assert refused, "30 random bytes in the scan should often leave a reserved marker"


@pytest.mark.parametrize(
    "data, size",
    [
        (png_header_claiming(60000, 60000), "60000x60000"),
        (jpeg_claiming(60000, 60000), "60000x60000"),
        (b"BM" + bytes(12) + struct.pack("<Iii", 40, 100000, 100000) + bytes(40), "100000x100000"),
    ],
    ids=["png", "jpeg", "bmp"],
)
def test_absurd_declared_sizes_are_refused_before_decoding(
    data: bytes, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*args: Any) -> None:
        raise AssertionError("cv2.imdecode was called on an image over max_pixels")

    monkeypatch.setattr(image_cpu.cv2, "imdecode", must_not_decode)
    with pytest.raises(InvalidInputError, match=size):
        decode(data)


def test_max_pixels_parameter(photo_bytes: dict[str, bytes]) -> None:
    with pytest.raises(InvalidInputError, match="451x300"):
        decode(photo_bytes["chelsea.jpg"], max_pixels="100000")
    assert "result" in decode(photo_bytes["chelsea.jpg"], max_pixels=451 * 300)
    with pytest.raises(ConfigError, match="max_pixels"):
        tp.create_backend("DecodeMat", {"max_pixels": "-1"})


def test_non_bytes_data_is_a_typed_error() -> None:
    for data in ("a string", 42, None, np.zeros((2, 2), np.uint8)):
        with pytest.raises(InvalidInputError, match="encoded image bytes"):
            decode(data)


def test_preprocess_matches_opencv_by_hand(photo_bytes: dict[str, bytes]) -> None:
    for name, data in photo_bytes.items():
        bgr = decode(data)["result"]
        item = {"data": bgr, "color": "bgr"}
        params = {"resize_h": 224, "resize_w": "200", "color": "rgb"}
        tp.create_backend(PREPROCESS, params).forward([item])
        by_hand = cv2.cvtColor(
            cv2.resize(bgr, (200, 224), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB
        )
        tensor = item["result"]
        assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (1, 3, 224, 200), name
        assert item["color"] == "rgb"
        np.testing.assert_array_equal(tensor[0].permute(1, 2, 0).numpy(), by_hand, err_msg=name)


def test_cvtcolor_converts_only_when_the_colour_differs() -> None:
    bgr = np.random.default_rng(6).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    same = run("CvtColorMat", bgr, color="bgr")
    assert same["result"] is bgr and same["color"] == "bgr"
    untagged = run("CvtColorMat", bgr, color="RGB")  # no "color" key: OpenCV's BGR
    np.testing.assert_array_equal(untagged["result"], bgr[:, :, ::-1])
    item = {"data": bgr, "color": "rgb"}
    tp.create_backend("CvtColorMat", {"color": "bgr"}).forward([item])
    np.testing.assert_array_equal(item["result"], bgr[:, :, ::-1])
    assert item["color"] == "bgr"


def test_cvtcolor_failure_leaves_batch_mates_safe_to_rerun() -> None:
    good = {"data": np.zeros((2, 2, 3), np.uint8), "color": "bgr"}
    bad = {"data": np.zeros((2, 2), np.uint8), "color": "bgr"}  # one channel
    backend = tp.create_backend("CvtColorMat", {"color": "rgb"})
    with pytest.raises(InvalidInputError, match="3 channels"):
        backend.forward([good, bad])
    assert good["color"] == "bgr" and "result" not in good  # nothing committed
    backend.forward([good])
    assert good["color"] == "rgb"


def test_resize_keeps_an_image_already_at_size() -> None:
    image = np.zeros((8, 9, 3), np.uint8)
    assert run("ResizeMat", image, resize_h=8, resize_w=9)["result"] is image


def test_stages_reject_what_is_not_a_mat() -> None:
    for expression, params in [
        ("ResizeMat", {"resize_h": 4, "resize_w": 4}),
        ("CvtColorMat", {"color": "rgb"}),
        ("Mat2Tensor", {}),
    ]:
        for data in (b"bytes", np.zeros((0, 3, 3), np.uint8), torch.zeros(3, 4, 4)):
            with pytest.raises(InvalidInputError):
                run(expression, data, **params)
    with pytest.raises(InvalidInputError, match="uint8 or float32"):
        run("Mat2Tensor", np.zeros((2, 2, 3), np.float64))


def test_stages_are_safe_to_rerun(photo_bytes: dict[str, bytes]) -> None:
    item = {"data": photo_bytes["astronaut.jpg"]}
    decoder = tp.create_backend("DecodeMat", {})
    decoder.forward([item])
    first = item["result"]
    decoder.forward([item])
    np.testing.assert_array_equal(item["result"], first)
    pre = tp.create_backend(PREPROCESS, {"resize_h": 32, "resize_w": 32, "color": "rgb"})
    runs = []
    for _ in range(2):
        rerun = {"data": first, "color": "bgr"}
        pre.forward([rerun])
        runs.append(rerun["result"].clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_mat2tensor_is_a_zero_copy_channels_last_view() -> None:
    image = np.random.default_rng(7).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    tensor = run("Mat2Tensor", image)["result"]
    assert tuple(tensor.shape) == (1, 3, 6, 5) and tensor.device.type == "cpu"
    assert tensor.is_contiguous(memory_format=torch.channels_last)
    assert tensor.data_ptr() == image.ctypes.data
    np.testing.assert_array_equal(tensor[0, 2].numpy(), image[:, :, 2])
    gray = run("Mat2Tensor", image[:, :, 0].copy())["result"]
    assert tuple(gray.shape) == (1, 1, 6, 5)


def test_missing_or_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="resize_h"):
        tp.create_backend("ResizeMat", {"resize_w": 4})
    with pytest.raises(ConfigError, match="color"):
        tp.create_backend("CvtColorMat", {"color": "hsv"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            tp.create_backend("Mat2Tensor", {"device": "cuda"})
