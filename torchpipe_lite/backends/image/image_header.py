"""Cheap image header reading: an image's format and declared size, without decoding a pixel.

Decoders allocate what a header declares, so a 100-byte file can claim 60000x60000 pixels
(10.8 GB as BGR). ``read_header`` lets a decoder refuse such input before any allocation;
OpenCV's own ``CV_IO_MAX_IMAGE_PIXELS`` (2^30 pixels by default) is only a last line of defence.

JPEG, PNG, BMP, GIF, WebP, TIFF, Sun raster and the Netpbm family (PBM, PGM, PPM, PAM, PFM)
are parsed here; other formats are sized by Pillow's lazy ``Image.open`` (which reads only the
header) when Pillow is installed. ``read_header`` never raises: whatever the bytes, they are an
image of a declared size or ``None``, and the callers turn either into a typed outcome.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from ...errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Default ``max_pixels`` of the decoders: 50 megapixels (150 MB as 3-channel uint8).
DEFAULT_MAX_PIXELS = 50_000_000
#: Default ``max_pixels_per_byte``: declared pixels per byte of the encoded file. Photographs
#: hold a few pixels per byte and even a flat one-colour JPEG or PNG some hundreds (deflate
#: stops near 1,000:1), so far more is a decompression bomb: a few bytes declaring a canvas that
#: costs the decoder seconds of CPU and hundreds of megabytes.
DEFAULT_MAX_PIXELS_PER_BYTE = 20_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the frame size: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8,
# DAC CC).
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Markers without a length field: TEM and RST0-7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_EXIF_ORIENTATION_TAG = 0x0112
_TIFF_WIDTH_TAG, _TIFF_HEIGHT_TAG = 0x0100, 0x0101
#: TIFF field types whose value is an unsigned integer: SHORT, LONG, LONG8 (BigTIFF), by size.
_TIFF_UINT_BYTES = {3: 2, 4: 4, 16: 8}
_SUN_RASTER_MAGIC = b"\x59\xa6\x6a\x95"
#: Netpbm magic numbers: P1-P6 (PBM/PGM/PPM, plain and raw), P7 (PAM), PF/Pf (PFM).
_NETPBM_MAGIC = frozenset({b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7", b"PF", b"Pf"})
#: A Netpbm header is text of any length (comments); only this much of it is read, so a file
#: whose size is not declared within it cannot be sized (and is not decoded).
_NETPBM_HEADER_BYTES = 1024
#: Longest number token read from a text header (longer ones are not a size).
_MAX_DIGITS = 20


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares."""

    #: "jpeg", "png", "bmp", "gif", "webp", "tiff", "sun", "pnm", "pam", "pfm", or Pillow's
    #: name in lower case.
    format: str
    width: int
    height: int
    #: Colour components (JPEG only; 0 where not read).
    channels: int = 0
    #: EXIF orientation (JPEG only): 1 = stored upright, 2-8 = the TIFF/EXIF transforms.
    orientation: int = 1

    @property
    def pixels(self) -> int:
        """Declared width x height."""
        return self.width * self.height


#: Request key by which a caller that has read an image's header already (a server weighing
#: the call before admitting it) passes it on: ``(data, header)``, the very bytes it read and
#: what ``read_header`` gave for them. A decoder then reads no header of its own for them.
HEADER_KEY = "image_header"


def header_of(item: dict, buf: bytes | bytearray | memoryview) -> ImageHeader | None:
    """The header of ``item``'s data ``buf``: the one ``item[HEADER_KEY]`` carries when it was
    read from this very data object, else ``read_header(buf)``."""
    known = item.get(HEADER_KEY)
    if (
        isinstance(known, tuple)
        and len(known) == 2
        and known[0] is item.get("data")
        and (known[1] is None or isinstance(known[1], ImageHeader))
    ):
        return known[1]
    return read_header(buf)


def read_header(data: bytes | bytearray | memoryview) -> ImageHeader | None:
    """The header of ``data``, or ``None`` when it is not an image whose size can be read.

    Never raises: a header declaring an absurd size is returned as declared (``check_pixels``
    refuses it), and one too absurd for Pillow to open is ``None``."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(buf) < 8:
        return None
    head = bytes(buf[:16])
    if head.startswith(b"\xff\xd8\xff"):
        header = _jpeg(buf)
    elif head.startswith(_PNG_SIGNATURE):
        header = _png(buf)
    elif head.startswith(b"BM"):
        header = _bmp(buf)
    elif head.startswith((b"GIF87a", b"GIF89a")):
        header = _gif(buf)
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        header = _webp(buf)
    elif head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        header = _tiff(bytes(buf))
    elif head.startswith(_SUN_RASTER_MAGIC):
        header = _sun_raster(head)
    elif head[:2] in _NETPBM_MAGIC:
        header = _netpbm(bytes(buf[:_NETPBM_HEADER_BYTES]))
    else:
        header = _pillow(buf)
    if header is None or header.width <= 0 or header.height <= 0:
        return None
    return header


def check_pixels(
    header: ImageHeader,
    max_pixels: int,
    *,
    encoded_bytes: int | None = None,
    max_pixels_per_byte: int = DEFAULT_MAX_PIXELS_PER_BYTE,
) -> None:
    """Raise ``InvalidInputError`` when ``header`` declares more than ``max_pixels`` pixels, or
    (given the file's ``encoded_bytes``) more than ``max_pixels_per_byte`` pixels per byte."""
    if header.pixels > max_pixels:
        raise InvalidInputError(
            f"{header.format.upper()} image declares {header.width}x{header.height} "
            f"({header.pixels:,} pixels), over the limit of {max_pixels:,} pixels (max_pixels)"
        )
    if encoded_bytes is not None and header.pixels > max_pixels_per_byte * max(1, encoded_bytes):
        raise InvalidInputError(
            f"{header.format.upper()} image of {encoded_bytes:,} bytes declares "
            f"{header.width}x{header.height} pixels, over {max_pixels_per_byte:,} pixels per "
            "byte (max_pixels_per_byte): a decompression bomb"
        )


def _u16be(buf, pos: int) -> int:
    return (buf[pos] << 8) | buf[pos + 1]


def _u16le(buf, pos: int) -> int:
    return buf[pos] | (buf[pos + 1] << 8)


def _jpeg(buf) -> ImageHeader | None:
    """Walk the marker segments up to the first start-of-frame."""
    size = len(buf)
    pos = 2
    orientation = 1
    while pos + 4 <= size:
        if buf[pos] != 0xFF:
            return None  # not at a marker: corrupt
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = _u16be(buf, pos)
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 8 > size:
                return None
            height, width, channels = _u16be(buf, pos + 3), _u16be(buf, pos + 5), buf[pos + 7]
            return ImageHeader("jpeg", width, height, channels, orientation)
        if marker == 0xE1 and bytes(buf[pos + 2 : pos + 8]) == b"Exif\x00\x00":
            orientation = _exif_orientation(bytes(buf[pos + 8 : pos + length]))
        pos += length
    return None


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag of an EXIF block's first IFD (1 when absent or unreadable)."""
    value = _first_ifd(tiff, (_EXIF_ORIENTATION_TAG,)).get(_EXIF_ORIENTATION_TAG, 1)
    return value if 1 <= value <= 8 else 1


def _first_ifd(tiff: bytes, tags: tuple[int, ...]) -> dict[int, int]:
    """The unsigned integer values of ``tags`` in the first IFD of a TIFF structure (a TIFF
    file, or an EXIF block), those present and readable."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return {}
    order = "little" if tiff[:2] == b"II" else "big"
    big = int.from_bytes(tiff[2:4], order) == 43  # BigTIFF: 8-byte offsets and counts
    offset_bytes, count_bytes, entry_bytes = (8, 8, 20) if big else (4, 2, 12)
    start = 8 if big else 4
    ifd = int.from_bytes(tiff[start : start + offset_bytes], order)
    count = int.from_bytes(tiff[ifd : ifd + count_bytes], order)
    first = ifd + count_bytes
    # Only entries inside the data: a count of billions costs no more than the file's size.
    count = min(count, max(0, (len(tiff) - first) // entry_bytes))
    values: dict[int, int] = {}
    for index in range(count):
        entry = first + entry_bytes * index
        tag = int.from_bytes(tiff[entry : entry + 2], order)
        kind = int.from_bytes(tiff[entry + 2 : entry + 4], order)
        value_at = entry + 4 + offset_bytes  # after tag, type and the value count
        if tag in tags and kind in _TIFF_UINT_BYTES:
            size = _TIFF_UINT_BYTES[kind]
            values[tag] = int.from_bytes(tiff[value_at : value_at + size], order)
    return values


def _png(buf) -> ImageHeader | None:
    # The IHDR chunk must come first: length (13), "IHDR", width, height (big-endian).
    if len(buf) < 24 or bytes(buf[12:16]) != b"IHDR":
        return None
    width = int.from_bytes(bytes(buf[16:20]), "big")
    height = int.from_bytes(bytes(buf[20:24]), "big")
    return ImageHeader("png", width, height)


def _bmp(buf) -> ImageHeader | None:
    if len(buf) < 26:
        return None
    dib_size = int.from_bytes(bytes(buf[14:18]), "little")
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit dimensions
        return ImageHeader("bmp", _u16le(buf, 18), _u16le(buf, 20))
    if dib_size < 40:
        return None
    width = int.from_bytes(bytes(buf[18:22]), "little", signed=True)
    height = int.from_bytes(bytes(buf[22:26]), "little", signed=True)
    return ImageHeader("bmp", width, abs(height))  # a negative height means top-down rows


def _gif(buf) -> ImageHeader | None:
    return ImageHeader("gif", _u16le(buf, 6), _u16le(buf, 8)) if len(buf) >= 10 else None


def _webp(buf) -> ImageHeader | None:
    if len(buf) < 30:
        return None
    chunk = bytes(buf[12:16])
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        width = 1 + int.from_bytes(bytes(buf[24:27]), "little")
        height = 1 + int.from_bytes(bytes(buf[27:30]), "little")
    elif chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 packed after 0x2f
        if buf[20] != 0x2F:
            return None
        b0, b1, b2, b3 = buf[21], buf[22], buf[23], buf[24]
        width = 1 + (b0 | ((b1 & 0x3F) << 8))
        height = 1 + ((b1 >> 6) | (b2 << 2) | ((b3 & 0x0F) << 10))
    elif chunk == b"VP8 ":  # lossy: key frame start code, then 14-bit width and height
        if bytes(buf[23:26]) != b"\x9d\x01\x2a":
            return None
        width = _u16le(buf, 26) & 0x3FFF
        height = _u16le(buf, 28) & 0x3FFF
    else:
        return None
    return ImageHeader("webp", width, height)


def _tiff(tiff: bytes) -> ImageHeader | None:
    tags = (_TIFF_WIDTH_TAG, _TIFF_HEIGHT_TAG)
    values = _first_ifd(tiff, tags)
    if len(values) < 2:
        return None
    return ImageHeader("tiff", values[_TIFF_WIDTH_TAG], values[_TIFF_HEIGHT_TAG])


def _sun_raster(head: bytes) -> ImageHeader | None:
    # Magic, then width and height as big-endian 32-bit words.
    if len(head) < 12:
        return None
    return ImageHeader("sun", int.from_bytes(head[4:8], "big"), int.from_bytes(head[8:12], "big"))


def _netpbm(text: bytes) -> ImageHeader | None:
    """P1-P6 and PF/Pf: magic, width, height as whitespace-separated decimal tokens (with
    ``#`` comments between them); P7 (PAM): ``WIDTH w`` and ``HEIGHT h`` lines up to ENDHDR."""
    magic = text[:2]
    lines = (line.split(b"#", 1)[0].split() for line in text[2:].splitlines())
    if magic == b"P7":
        fields: dict[bytes, bytes] = {}
        for words in lines:
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) == 2:
                fields[words[0]] = words[1]
        width, height, name = fields.get(b"WIDTH"), fields.get(b"HEIGHT"), "pam"
    else:
        tokens: list[bytes] = []
        for words in lines:
            tokens += words
            if len(tokens) >= 2:
                break
        width, height = (*tokens, None, None)[:2]
        name = "pfm" if magic in (b"PF", b"Pf") else "pnm"
    if not _is_number(width) or not _is_number(height):
        return None
    return ImageHeader(name, int(width), int(height))


def _is_number(token: bytes | None) -> bool:
    return token is not None and token.isdigit() and len(token) <= _MAX_DIGITS


def _pillow(buf) -> ImageHeader | None:
    """Size any other format through Pillow's lazy open (header only)."""
    try:
        from PIL import Image
    except ImportError:
        logger.debug("Pillow is not installed: only JPEG, PNG, BMP, GIF and WebP can be sized")
        return None
    try:
        with Image.open(io.BytesIO(bytes(buf))) as image:
            width, height = image.size
            name = (image.format or "image").lower()
    except Image.DecompressionBombError as error:
        # Pillow refuses sizes over twice its own limit at open, before telling them: beyond
        # ours too, and unsized, so never decoded.
        logger.debug("Pillow refuses to open an image of %d bytes: %s", len(buf), error)
        return None
    except Exception:  # any format Pillow cannot identify: not an image we can size
        return None
    return ImageHeader(name, width, height)
