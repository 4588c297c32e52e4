"""Finds corrupt entropy-coded data in a JPEG, which libjpeg would decode as noise.

libjpeg (through OpenCV) only *warns* about a scan holding bytes that no encoder writes
("Corrupt JPEG data: ... extraneous bytes before marker") and returns an image of noise; a
classifier would then answer with confidence. In valid scan data every 0xFF byte is followed by
0x00 (stuffing), a restart marker (0xD0-0xD7), another 0xFF (fill) or a real marker ending the
scan; a reserved marker code (0x02-0xBF) there means the data is not a JPEG encoder's output.

The segments are walked in Python (a dozen steps per file); the scan data itself, nearly all
of the bytes, is searched in a vectorised pass: NumPy for one file, or for a batch of files
the marker positions found elsewhere (``jpeg_scan_errors``: the GPU decoder searches the whole
batch's bytes on the device in a few kernels), so the cost per file is a few interpreter
steps.
"""

from __future__ import annotations

import bisect

import numpy as np

from ...errors import InvalidInputError

_SOS, _EOI, _TEM = 0xDA, 0xD9, 0x01
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
#: Segments that may follow a scan: tables (DHT, DAC, DQT), DNL, DRI, another scan, COM, APPn.
_AFTER_SCAN = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, _SOS, 0xFE, *range(0xE0, 0xF0)})

Buffer = bytes | bytearray | memoryview


def jpeg_scan_error(data: Buffer) -> str | None:
    """Why the JPEG's scan data is corrupt, or ``None`` when no corruption is seen.

    Truncated files and files without an end marker are not judged here (the decoder refuses
    those itself); segments are walked by their lengths, so headers (EXIF thumbnails, ICC
    profiles) and bytes after the end-of-image marker are never scanned.
    """
    return _walk(data, _MaskHits(np.frombuffer(data, dtype=np.uint8)))


def jpeg_scan_errors(files: list[Buffer], markers: list[int]) -> list[str | None]:
    """``jpeg_scan_error`` of each file, given where the files, concatenated in order, hold a
    0xFF followed by a non-zero byte (``markers``: sorted positions in the concatenation, as
    ``marker_candidates`` finds them, on whatever device searched them)."""
    hits = _PositionHits(markers)
    errors = []
    for data in files:
        errors.append(_walk(data, hits))
        hits.base += len(data)
    return errors


def check_jpeg_scan(data: Buffer) -> None:
    """Raise ``InvalidInputError`` when ``jpeg_scan_error`` finds corrupt scan data."""
    raise_for_scan_error(jpeg_scan_error(data))


def raise_for_scan_error(error: str | None) -> None:
    """Raise ``InvalidInputError`` for an error ``jpeg_scan_error(s)`` returned."""
    if error is not None:
        raise InvalidInputError(f"corrupt JPEG data: {error}")


class _MaskHits:
    """Where a file's bytes hold 0xFF followed by a non-zero byte (every marker, restart
    marker and fill byte), found with one vectorised pass when first asked."""

    __slots__ = ("_mask", "buf")

    def __init__(self, buf: np.ndarray):
        self.buf = buf
        self._mask: np.ndarray | None = None

    def first(self, start: int, end: int) -> int | None:
        """The first such position in ``start..end-1``; None if there is none."""
        if self._mask is None:
            buf = self.buf
            self._mask = (buf[:-1] == 0xFF) & (buf[1:] != 0)
        window = self._mask[start:end]
        first = int(window.argmax())
        return start + first if window[first] else None


class _PositionHits:
    """The same positions, given as a sorted list over several concatenated files; ``base``
    is where the file being walked starts in the concatenation."""

    __slots__ = ("base", "positions")

    def __init__(self, positions: list[int]):
        self.positions = positions
        self.base = 0

    def first(self, start: int, end: int) -> int | None:
        index = bisect.bisect_left(self.positions, self.base + start)
        if index < len(self.positions) and self.positions[index] < self.base + end:
            return self.positions[index] - self.base
        return None


def _walk(data: Buffer, hits: _MaskHits | _PositionHits) -> str | None:
    size = len(data)
    pos = 2  # after SOI
    scanned = False
    while pos + 1 < size:
        if data[pos] != 0xFF:
            if not scanned:
                return None  # junk between header segments: harmless to the pixels
            # A marker inside scan data with a bogus length: like libjpeg, skip to the next
            # marker, judging the bytes on the way as scan data.
            pos, error = _end_of_scan(data, hits, pos)
            if error is not None:
                return error
            continue
        marker = data[pos + 1]
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
        pos += (data[pos] << 8) | data[pos + 1]  # the segment, length included
        if scanned and pos > size:
            return f"a segment after the scan data runs past the end (byte {pos - size} over)"
        if marker == _SOS:
            scanned = True
            pos, error = _end_of_scan(data, hits, pos)
            if error is not None:
                return error
    return None


def _end_of_scan(
    data: Buffer, hits: _MaskHits | _PositionHits, start: int
) -> tuple[int, str | None]:
    """(position of the marker ending the scan data that starts at ``start``, error or None).

    In most files the first 0xFF followed by a non-zero byte is that marker. Where a restart
    marker or a fill byte comes first, an exact pass over the rest of the file follows.
    """
    size = len(data)
    if start + 1 >= size:
        return size, None
    first = hits.first(start, size - 1)
    if first is None:
        return size, None  # ran to the end without a marker: truncated, not ours to judge
    if not _continues_scan(data[first + 1]):
        return _judge(data, first)
    buf = np.frombuffer(data, dtype=np.uint8)
    following = buf[start + 1 :]
    exact = (buf[start:-1] == 0xFF) & (following != 0)
    exact &= (following != 0xFF) & ((following & 0xF8) != 0xD0)  # no RSTn, no fill
    first = int(exact.argmax())
    if not exact[first]:
        return size, None
    return _judge(data, start + first)


def _continues_scan(code: int) -> bool:
    return code == 0xFF or 0xD0 <= code <= 0xD7


def _judge(data: Buffer, marker_pos: int) -> tuple[int, str | None]:
    code = data[marker_pos + 1]
    if code != _TEM and code < 0xC0:
        return marker_pos, f"reserved marker 0xFF{code:02X} in the scan data at byte {marker_pos}"
    return marker_pos, None
