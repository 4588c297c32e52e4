"""Image header reading: formats and declared sizes, without decoding."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest

from benchmarks.call_attacks import ppm_declaring
from tests.image_samples import (
    IMAGES_DIR,
    bmp_declaring,
    gif_declaring,
    jpeg_claiming,
    pam_declaring,
    pcx_declaring,
    png_header_claiming,
    sun_raster_declaring,
    tiff_declaring,
    webp_declaring,
)
from torchpipe_lite.backends.image.image_cpu import DecodeMat
from torchpipe_lite.backends.image.image_header import ImageHeader, check_pixels, read_header
from torchpipe_lite.errors import InvalidInputError


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


#: A tiny file of every format the header reader parses itself, declaring the given size.
DECLARING = {
    "jpeg": jpeg_claiming,
    "png": png_header_claiming,
    "gif": gif_declaring,
    "bmp": bmp_declaring,
    "webp": webp_declaring,
    "tiff": tiff_declaring,
    "tiff big-endian": lambda w, h: tiff_declaring(w, h, big_endian=True),
    "sun": sun_raster_declaring,
    "pnm": ppm_declaring,
    "pam": pam_declaring,
}


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_every_format_declaring_60000x60000_is_sized_and_refused_before_decoding(kind):
    data = DECLARING[kind](60000, 60000)
    assert len(data) < 1000
    header = read_header(data)
    assert header is not None and (header.width, header.height) == (60000, 60000), kind
    backend = DecodeMat()
    backend.init({})
    with pytest.raises(InvalidInputError, match=r"60000x60000 \(3,600,000,000 pixels\)"):
        backend.forward([{"data": data}])


def test_the_119_byte_ppm_of_the_issue_is_sized_not_raised():
    ppm = ppm_declaring(60000, 60000)
    assert len(ppm) == 119
    assert read_header(ppm) == ImageHeader("pnm", 60000, 60000)


def test_netpbm_comments_plain_variants_and_pfm():
    assert read_header(b"P3 # plain\n# more\n 640\t480\n255\n" + bytes(8)) == ImageHeader(
        "pnm", 640, 480
    )
    assert read_header(b"P4\n8 2\n\xff\x00") == ImageHeader("pnm", 8, 2)
    assert read_header(b"Pf\n7 5\n-1.0\n" + bytes(140)) == ImageHeader("pfm", 7, 5)


def test_an_image_too_absurd_for_pillow_to_open_is_unsized_and_never_decoded():
    pytest.importorskip("PIL.Image")
    assert read_header(pcx_declaring(30, 20)) == ImageHeader("pcx", 30, 20)
    huge = pcx_declaring(65535, 65535)  # Pillow refuses it at open, before telling its size
    assert read_header(huge) is None
    backend = DecodeMat()
    backend.init({})
    item = {"data": huge}
    backend.forward([item])
    assert "result" not in item  # no result: the service answers INVALID_IMAGE


@pytest.mark.parametrize(
    "data",
    [
        b"II*\x00\xff\xff\xff\x7f",  # first IFD far past the end
        b"II*\x00\x08\x00\x00\x00\xff\xff",  # 65,535 entries announced, none there
        tiff_declaring(30, 20)[:20],  # the height entry cut off
        b"MM\x00+\x00\x08\x00\x00" + bytes(8),  # BigTIFF, IFD at 0
        b"\x59\xa6\x6a\x95\x00\x00",
        b"P6\n",
        b"P6\n640\n",  # no height
        b"P6\n-640 480\n255\n",
        b"P6\n" + b"9" * 40 + b" 480\n",  # a number longer than any size
        b"P6\n" + b"#" * 2000 + b"\n640 480\n",  # the size past the part of the header read
        b"P7\nWIDTH 640\nENDHDR\nHEIGHT 480\n",  # the height after the header's end
    ],
)
def test_malformed_headers_of_the_other_formats_are_not_images(data: bytes) -> None:
    assert read_header(data) is None


def test_random_and_mutated_headers_never_raise():
    rng = np.random.default_rng(3)
    prefixes = [
        b"",
        b"\xff\xd8\xff",
        b"\x89PNG\r\n\x1a\n",
        b"BM",
        b"GIF89a",
        b"RIFF\0\0\0\0WEBP",
        b"II*\x00",
        b"MM\x00*",
        b"II+\x00",
        b"\x59\xa6\x6a\x95",
        b"P6",
        b"P7",
        b"PF",
    ]
    for trial in range(400):
        data = prefixes[trial % len(prefixes)] + rng.bytes(int(rng.integers(0, 64)))
        header = read_header(data)
        assert header is None or (header.width > 0 and header.height > 0)
    samples = [build(300, 200) for build in DECLARING.values()]
    for trial in range(2000):
        data = bytearray(samples[trial % len(samples)])
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        cut = int(rng.integers(0, len(data) + 1))
        header = read_header(bytes(data[:cut] if trial % 3 == 0 else data))
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
    photo = (IMAGES_DIR / "chelsea.jpg").read_bytes()
    check_pixels(read_header(photo), 50_000_000, encoded_bytes=len(photo))


def test_a_carried_header_is_used_only_for_the_very_bytes_it_was_read_from():
    from torchpipe_lite.backends.image.image_header import HEADER_KEY, header_of

    photo = encode(".png", np.zeros((20, 30, 3), np.uint8))
    claimed = ImageHeader("png", 3, 2)
    assert header_of({"data": photo, HEADER_KEY: (photo, claimed)}, photo) is claimed
    assert header_of({"data": photo, HEADER_KEY: (photo, None)}, photo) is None
    other = bytes(bytearray(photo))  # equal bytes, another object: read afresh
    assert header_of({"data": other, HEADER_KEY: (photo, claimed)}, other) == ImageHeader(
        "png", 30, 20
    )
    assert header_of({"data": photo, HEADER_KEY: "not a pair"}, photo).width == 30
