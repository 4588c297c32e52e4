"""Sample and hostile images for the image tests: photo paths, tiny files declaring huge sizes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

IMAGES_DIR = Path(__file__).parent / "data" / "images"
#: Small colour and grayscale photographs (see tests/data/images/LICENSES.md).
SMALL_PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "coins.jpg", "camera.jpg")
GRAYSCALE_PHOTOS = ("coins.jpg", "camera.jpg", "brick.jpg")


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR chunk (CRC included) declaring ``width`` x ``height``,
    followed by a tiny IDAT: enough for a decoder to start allocating."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real baseline JPEG whose SOF0 segment is patched to declare ``width`` x ``height``."""
    ok, encoded = cv2.imencode(
        ".jpg", np.full((8, 8, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its baseline frame header (SOF0) rewritten to ``width`` x ``height``."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def gif_declaring(width: int, height: int) -> bytes:
    """A tiny GIF whose logical screen is ``width`` x ``height`` (no image data to speak of)."""
    screen = width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x00\x00\x00"
    return b"GIF89a" + screen + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def png_of(jpeg: bytes) -> bytes:
    """A PNG of the pixels ``jpeg`` decodes to (the same image, in a format nvJPEG refuses)."""
    pixels = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.imencode(".png", pixels)[1].tobytes()
