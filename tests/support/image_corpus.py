"""A corpus of hostile payloads and valid-but-unusual images, each with the outcome it must get."""

from __future__ import annotations

import gzip
import io
import random
import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from tests.image_samples import jpeg_claiming, png_header_claiming

#: The outcome a valid image must get: predictions rather than an error code.
LABEL = "label"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    #: "INVALID_IMAGE", "TOO_LARGE" (ErrorCode names) or ``LABEL``.
    expect: str


def _encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, encoded = cv2.imencode(ext, image, params or [])
    assert ok, f"OpenCV could not encode {ext}"
    return encoded.tobytes()


def _scan_start(jpeg: bytes) -> int:
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2 : sos + 4])[0]


def hostile_cases(photo: bytes, *, max_image_bytes: int) -> list[Case]:
    """Inputs that are not images, are broken, or would make a naive decoder allocate GBs."""
    scan = _scan_start(photo)
    rng = random.Random(7)
    cases = {
        "empty": b"",
        "one-byte": b"\xff",
        "jpeg-soi-only": b"\xff\xd8",
        "jpeg-soi-eoi": b"\xff\xd8\xff\xd9",
        "text": b"The quick brown fox jumps over the lazy dog.\n" * 20,
        "html": b"<!DOCTYPE html><html><body><img src='cat.jpg'></body></html>",
        "random-bytes": rng.randbytes(20_000),
        "zeros": bytes(20_000),
        "jpeg-cut-in-header": photo[:200],
        "jpeg-cut-at-scan-start": photo[:scan],
        "jpeg-cut-at-half": photo[: len(photo) // 2],
        "jpeg-cut-before-end": photo[:-3],
        "jpeg-garbage-body": photo[:scan] + rng.randbytes(len(photo) - scan - 2) + b"\xff\xd9",
        "png-60000x60000": png_header_claiming(60_000, 60_000),
        "jpeg-60000x60000": jpeg_claiming(60_000, 60_000),
        "png-cut-in-idat": _encode(".png", cv2.imdecode(np.frombuffer(photo, np.uint8), 1))[:5_000],
        "bmp-header-only": b"BM" + bytes(12) + struct.pack("<Iii", 40, 64, 64) + bytes(8),
        "gif-header-only": b"GIF89a" + struct.pack("<HH", 640, 480),
        "gzip": gzip.compress(photo),
        "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
    }
    found = [Case(name, data, "INVALID_IMAGE") for name, data in cases.items()]
    oversized = photo + bytes(max_image_bytes + 1 - len(photo))
    found.append(Case("over-the-size-limit", oversized, "TOO_LARGE"))
    return found


def valid_cases(photo: bytes) -> list[Case]:
    """Real images in less common shapes and encodings: every one must get a label."""
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    rgba[:, :, 3] = 128
    deep = image.astype(np.uint16) * 257  # 16 bits per sample
    cmyk = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("CMYK").save(cmyk, "JPEG")
    cases = {
        "grayscale-jpeg": _encode(".jpg", gray),
        "grayscale-png": _encode(".png", gray),
        "rgba-png": _encode(".png", rgba),
        "16-bit-png": _encode(".png", deep),
        "bmp": _encode(".bmp", image),
        "progressive-jpeg": _encode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "cmyk-jpeg": cmyk.getvalue(),
        "1x1": _encode(".jpg", image[:1, :1]),
        "1x2000": _encode(".jpg", cv2.resize(image, (1, 2000))),
        "2000x1": _encode(".jpg", cv2.resize(image, (2000, 1))),
        "4000x3000": _encode(".jpg", cv2.resize(image, (4000, 3000))),
        "quality-5": _encode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 5]),
        "trailing-bytes": photo + b"\0" * 100 + b"trailing junk after the end-of-image marker",
    }
    return [Case(name, data, LABEL) for name, data in cases.items()]
