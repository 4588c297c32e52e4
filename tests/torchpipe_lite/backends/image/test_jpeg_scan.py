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
from torchpipe_lite.backends.image.jpeg_scan import (
    check_jpeg_scan,
    jpeg_scan_error,
    jpeg_scan_errors,
)
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


def batch_errors(files: list[bytes]) -> list[str | None]:
    """``jpeg_scan_errors`` as DecodeTensor calls it: the files concatenated and their marker
    candidates searched in one pass (here with NumPy instead of on the device)."""
    joined = np.frombuffer(b"".join(files), np.uint8)
    markers = np.flatnonzero((joined[:-1] == 0xFF) & (joined[1:] != 0))
    return jpeg_scan_errors(files, joined, markers)


def corruptions(photo: bytes) -> dict[str, bytes]:
    start = scan_start(photo)
    rng = random.Random(7)
    garbage = photo[:start] + rng.randbytes(len(photo) - start - 2) + b"\xff\xd9"
    return {
        "random-scan": garbage,
        "reserved-marker": photo[: start + 100] + b"\xff\x42" + photo[start + 102 :],
        "frame-after-scan": photo[: start + 100] + b"\xff\xc0" + photo[start + 102 :],
        "segment-past-end": photo[:-2] + b"\xff\xfe\x7f\xff",
        "truncated": photo[: len(photo) // 2],
        "ends-with-ff": photo[: len(photo) // 2] + b"\xff",
        "not-a-jpeg": b"\x00\x01\x02\x03",
    }


def test_a_batch_judges_every_file_as_the_single_file_check_does(photo):
    files = {**encodings(photo), **corruptions(photo)}
    files["sos-code-in-a-header"] = (  # an APP1 payload holding 0xFFDA then a reserved code
        photo[:2] + b"\xff\xe1\x00\x08\xff\xda\xff\x42" + photo[2:]
    )
    expected = {name: jpeg_scan_error(data) for name, data in files.items()}
    assert expected["random-scan"] and expected["reserved-marker"]
    assert expected["frame-after-scan"] and expected["segment-past-end"]
    names = list(files)
    for order in (names, names[::-1], random.Random(3).sample(names, len(names))):
        found = batch_errors([files[name] for name in order])
        assert dict(zip(order, found, strict=True)) == {name: expected[name] for name in order}


def test_a_batch_clears_plain_photographs_without_walking_them(photo, monkeypatch):
    from torchpipe_lite.backends.image import jpeg_scan

    files = [path.read_bytes() for path in sorted(IMAGES_DIR.glob("*.jpg"))]
    files += [encodings(photo)["restart-markers"], corruptions(photo)["reserved-marker"]]
    walked = []

    def walk(data, hits):
        walked.append(data)
        return original(data, hits)

    original = jpeg_scan._walk
    monkeypatch.setattr(jpeg_scan, "_walk", walk)
    errors = batch_errors(files)
    assert errors[:-1] == [None] * (len(files) - 1) and errors[-1].startswith("reserved marker")
    assert walked == [files[-1]]  # only the corrupt file needed the exact walk
