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


def tiff_declaring(width: int, height: int, *, big_endian: bool = False) -> bytes:
    """A TIFF whose first IFD declares ``width`` x ``height`` (LONG values), and no strips."""
    order = ">" if big_endian else "<"
    entries = [(0x0100, 4, 1, width), (0x0101, 4, 1, height)]
    ifd = struct.pack(order + "H", len(entries))
    ifd += b"".join(struct.pack(order + "HHII", *entry) for entry in entries)
    head = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8)
    return head + ifd + struct.pack(order + "I", 0)


def bmp_declaring(width: int, height: int) -> bytes:
    """A BITMAPINFOHEADER BMP declaring ``width`` x ``height``, without pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def webp_declaring(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP declaring a ``width`` x ``height`` canvas, without frames."""
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def sun_raster_declaring(width: int, height: int) -> bytes:
    """A Sun raster header declaring ``width`` x ``height`` (24-bit, uncompressed)."""
    return b"\x59\xa6\x6a\x95" + struct.pack(">7I", width, height, 24, 0, 1, 0, 0)


def pam_declaring(width: int, height: int) -> bytes:
    """A PAM (P7) header declaring ``width`` x ``height``."""
    return f"P7\nWIDTH {width}\nHEIGHT {height}\nDEPTH 3\nMAXVAL 255\nENDHDR\n".encode()


def pcx_declaring(width: int, height: int) -> bytes:
    """A PCX header (a format only Pillow sizes) declaring ``width`` x ``height``."""
    window = struct.pack("<4H", 0, 0, width - 1, height - 1)
    header = b"\x0a\x05\x01\x08" + window + struct.pack("<HH", 72, 72) + bytes(48)
    header += b"\x00\x03" + struct.pack("<HH", (width + 1) // 2 * 2 & 0xFFFF, 1)
    return header + bytes(128 - len(header))
