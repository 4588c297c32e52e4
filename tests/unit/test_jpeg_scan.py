"""jpeg_scan: corrupt scan data is found; every kind of valid JPEG passes."""

from __future__ import annotations

import io
import random
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.image_samples import IMAGES_DIR
from torchpipe_lite.backends.image.jpeg_scan import check_jpeg_scan, jpeg_scan_error
from torchpipe_lite.errors import InvalidInputError


@pytest.fixture(scope="module")
def photo() -> bytes:
    return (IMAGES_DIR / "chelsea.jpg").read_bytes()


def scan_start(jpeg: bytes) -> int:
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2 : sos + 4])[0]


def encodings(photo: bytes) -> dict[str, bytes]:
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)

    def cv(params: list[int], img: np.ndarray = image) -> bytes:
        return cv2.imencode(".jpg", img, params)[1].tobytes()

    def pil(mode: str, **options) -> bytes:
        out = io.BytesIO()
        Image.open(io.BytesIO(photo)).convert(mode).save(out, "JPEG", **options)
        return out.getvalue()

    app1 = b"Exif\0\0" + bytes(range(256)) * 4  # header bytes with every 0xFFxx pair in it
    with_app1 = photo[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + photo[2:]
    return {
        "as-is": photo,
        "progressive": cv([cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "restart-markers": cv([cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        "optimized": cv([cv2.IMWRITE_JPEG_OPTIMIZE, 1]),
        "quality-5": cv([cv2.IMWRITE_JPEG_QUALITY, 5]),
        "grayscale": cv([], cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)),
        "pil-progressive": pil("RGB", progressive=True, optimize=True),
        "pil-cmyk": pil("CMYK"),
        "trailing-bytes": photo + b"\0\xff\x12junk after the end",
        "app1-with-ff-bytes": with_app1,
    }


def test_valid_jpegs_pass(photo):
    for name, data in encodings(photo).items():
        assert jpeg_scan_error(data) is None, name
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None, name
    for path in sorted(IMAGES_DIR.glob("*.jpg")):
        assert jpeg_scan_error(path.read_bytes()) is None, path.name


@pytest.mark.parametrize("seed", range(10))
def test_random_scan_data_is_found(photo, seed):
    start = scan_start(photo)
    garbage = photo[:start] + random.Random(seed).randbytes(len(photo) - start - 2) + b"\xff\xd9"
    # OpenCV decodes this to noise (libjpeg only warns): the reason for this check.
    assert cv2.imdecode(np.frombuffer(garbage, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(InvalidInputError, match="corrupt JPEG data"):
        check_jpeg_scan(garbage)


def test_reserved_marker_is_named(photo):
    start = scan_start(photo) + 100
    corrupt = photo[:start] + b"\xff\x42" + photo[start + 2 :]
    assert jpeg_scan_error(corrupt) == f"reserved marker 0xFF42 in the scan data at byte {start}"


def test_frame_marker_after_scan_is_corrupt(photo):
    start = scan_start(photo) + 100
    corrupt = photo[:start] + b"\xff\xc0" + photo[start + 2 :]
    assert jpeg_scan_error(corrupt).startswith("marker 0xFFC0 cannot follow scan data")


def test_truncation_is_left_to_the_decoder(photo):
    for cut in (3, 200, len(photo) // 2, len(photo) - 1):
        assert jpeg_scan_error(photo[:cut]) is None
