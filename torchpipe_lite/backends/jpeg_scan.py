"""Finds corrupt entropy-coded data in a JPEG, which libjpeg would decode as noise.

libjpeg (through OpenCV) only *warns* about a scan holding bytes that no encoder writes
("Corrupt JPEG data: ... extraneous bytes before marker") and returns an image of noise; a
classifier would then answer with confidence. In valid scan data every 0xFF byte is followed by
0x00 (stuffing), a restart marker (0xD0-0xD7), another 0xFF (fill) or a real marker ending the
scan; a reserved marker code (0x02-0xBF) there means the data is not a JPEG encoder's output.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

_SOS, _EOI, _TEM = 0xDA, 0xD9, 0x01
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
#: Segments that may follow a scan: tables (DHT, DAC, DQT), DNL, DRI, another scan, COM, APPn.
_AFTER_SCAN = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, _SOS, 0xFE, *range(0xE0, 0xF0)})


def jpeg_scan_error(data: bytes | bytearray | memoryview) -> str | None:
    """Why the JPEG's scan data is corrupt, or ``None`` when no corruption is seen.

    Truncated files and files without an end marker are not judged here (the decoder refuses
    those itself); segments are walked by their lengths, so headers (EXIF thumbnails, ICC
    profiles) and bytes after the end-of-image marker are never scanned.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    size = len(buf)
    pos = 2  # after SOI
    scanned = False
    while pos + 1 < size:
        if buf[pos] != 0xFF:
            if not scanned:
                return None  # junk between header segments: harmless to the pixels
            # A marker inside scan data with a bogus length: like libjpeg, skip to the next
            # marker, judging the bytes on the way as scan data.
            pos, error = _skip_scan(buf, pos)
            if error is not None:
                return error
            continue
        marker = int(buf[pos + 1])
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker == _EOI:
            return None
        if marker in _STANDALONE:
            continue
        if scanned and marker not in _AFTER_SCAN:
            return f"marker 0xFF{marker:02X} cannot follow scan data (byte {pos - 2})"
        if pos + 2 > size:
            return None
        pos += (int(buf[pos]) << 8) | int(buf[pos + 1])  # the segment, length included
        if scanned and pos > size:
            return f"a segment after the scan data runs past the end (byte {pos - size} over)"
        if marker == _SOS:
            scanned = True
            pos, error = _skip_scan(buf, pos)
            if error is not None:
                return error
    return None


def _skip_scan(buf: np.ndarray, start: int) -> tuple[int, str | None]:
    """(position of the marker ending the scan that starts at ``start``, error or None)."""
    scan = buf[start:]
    if len(scan) < 2:
        return len(buf), None
    after_ff = np.flatnonzero(scan[:-1] == 0xFF) + 1
    codes = scan[after_ff]
    in_scan = (codes == 0x00) | ((codes >= 0xD0) & (codes <= 0xD7)) | (codes == 0xFF)
    ends = np.flatnonzero(~in_scan)
    if len(ends) == 0:
        return len(buf), None  # ran to the end without a marker: truncated, not ours to judge
    code = int(codes[ends[0]])
    marker_pos = start + int(after_ff[ends[0]]) - 1
    if code != _TEM and code < 0xC0:
        return marker_pos, f"reserved marker 0xFF{code:02X} in the scan data at byte {marker_pos}"
    return marker_pos, None


def check_jpeg_scan(data: bytes | bytearray | memoryview) -> None:
    """Raise ``InvalidInputError`` when ``jpeg_scan_error`` finds corrupt scan data."""
    error = jpeg_scan_error(data)
    if error is not None:
        raise InvalidInputError(f"corrupt JPEG data: {error}")
