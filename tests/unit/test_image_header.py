"""Image header reading: formats and declared sizes, without decoding."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.image_samples import gif_declaring, jpeg_claiming, png_header_claiming
from torchpipe_lite.backends.image.image_cpu import DecodeMat
from torchpipe_lite.backends.image.image_header import ImageHeader, check_pixels, read_header
from torchpipe_lite.errors import InvalidInputError

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"


def encode(ext: str, image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(ext, image)
    assert ok, ext
    return encoded.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp", ".tiff", ".ppm", ".gif"])
def test_reads_the_size_of_every_format_opencv_writes(ext: str) -> None:
    image = np.random.default_rng(1).integers(0, 256, (21, 34, 3), dtype=np.uint8)
    header = read_header(encode(ext, image))
    assert header is not None, ext
    assert (header.width, header.height) == (34, 21)


def test_reads_lossy_and_extended_webp() -> None:
    image = np.random.default_rng(2).integers(0, 256, (19, 45, 3), dtype=np.uint8)
    ok, lossy = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert ok
    assert read_header(lossy.tobytes()) == ImageHeader("webp", 45, 19)
    pil = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    pil.fromarray(np.dstack([image, image[:, :, :1]])).save(buffer, "WEBP", lossless=True)
    header = read_header(buffer.getvalue())
    assert header is not None and (header.width, header.height) == (45, 19)


def test_reads_os2_and_top_down_bmp() -> None:
    core = b"BM" + bytes(12) + struct.pack("<IHH", 12, 300, 200) + bytes(8)
    assert read_header(core) == ImageHeader("bmp", 300, 200)
    info = b"BM" + bytes(12) + struct.pack("<Iii", 40, 640, -480) + bytes(40)
    assert read_header(info) == ImageHeader("bmp", 640, 480)


def test_huge_declared_sizes_are_read_from_tiny_files() -> None:
    png = png_header_claiming(60000, 60000)
    assert len(png) < 200
    assert read_header(png) == ImageHeader("png", 60000, 60000)
    header = read_header(jpeg_claiming(60000, 60000))
    assert header is not None and (header.width, header.height) == (60000, 60000)


def test_check_pixels_names_the_declared_size() -> None:
    with pytest.raises(InvalidInputError, match=r"60000x60000 \(3,600,000,000 pixels\)"):
        check_pixels(ImageHeader("png", 60000, 60000), 50_000_000)
    check_pixels(ImageHeader("png", 5000, 5000), 50_000_000)  # within the limit: no error


def test_jpeg_exif_orientation() -> None:
    pil = pytest.importorskip("PIL.Image")
    exif = pil.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    pil.new("RGB", (30, 20)).save(buffer, "JPEG", exif=exif.tobytes())
    header = read_header(buffer.getvalue())
    assert header == ImageHeader("jpeg", 30, 20, channels=3, orientation=6)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0\x00\x01",  # a segment length below 2
        b"\xff\xd8\xff\xda\x00\x08" + bytes(20),  # scan before any frame header
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IHDR" + bytes(8),  # zero width and height
        b"BM" + bytes(30),
        b"GIF89a\x00\x00\x00\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(20),
        b"hello, this is not an image at all",
    ],
)
def test_garbage_and_truncated_headers_are_not_images(data: bytes) -> None:
    assert read_header(data) is None


def test_random_bytes_never_raise_anything_but_invalid_input() -> None:
    rng = np.random.default_rng(3)
    prefixes = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF89a", b"RIFF\0\0\0\0WEBP"]
    for trial in range(300):
        data = prefixes[trial % len(prefixes)] + rng.bytes(int(rng.integers(0, 64)))
        try:
            header = read_header(data)
        except InvalidInputError:
            continue
        assert header is None or (header.width > 0 and header.height > 0)


def test_a_few_bytes_declaring_a_huge_canvas_are_a_bomb_refused_before_decoding():
    bomb = gif_declaring(7000, 7000)  # 49 MP: under max_pixels, but from 30-odd bytes
    header = read_header(bomb)
    assert (header.format, header.pixels) == ("gif", 49_000_000)
    with pytest.raises(InvalidInputError, match=r"pixels per byte .* decompression bomb"):
        check_pixels(header, 50_000_000, encoded_bytes=len(bomb))
    backend = DecodeMat()
    backend.init({})
    with pytest.raises(InvalidInputError, match="decompression bomb"):
        backend.forward([{"data": bomb}])
    # A photograph is a few pixels per byte: far from the limit.
    photo = (IMAGES / "chelsea.jpg").read_bytes()
    check_pixels(read_header(photo), 50_000_000, encoded_bytes=len(photo))
