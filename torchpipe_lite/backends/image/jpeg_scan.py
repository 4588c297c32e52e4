"""Finds corrupt entropy-coded data in a JPEG, which libjpeg would decode as noise.

libjpeg (through OpenCV) only *warns* about a scan holding bytes that no encoder writes
("Corrupt JPEG data: ... extraneous bytes before marker") and returns an image of noise; a
classifier would then answer with confidence. In valid scan data every 0xFF byte is followed by
0x00 (stuffing), a restart marker (0xD0-0xD7), another 0xFF (fill) or a real marker ending the
scan; a reserved marker code (0x02-0xBF) there means the data is not a JPEG encoder's output.

The segments are walked in Python (a dozen steps per file); the scan data itself, nearly all
of the bytes, is searched in a vectorised pass: NumPy for one file, or for a batch of files
the marker positions found elsewhere (``jpeg_scan_errors``: the GPU decoder searches the whole
batch's bytes on the device in a few kernels). For a batch, most files are cleared together
without walking them: one whose markers after its first SOS code are all restart markers or
the end of image cannot hold corrupt scan data (see ``_needs_walk``); only the others (a
progressive JPEG's later scans, say, or anything suspect) are walked.
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


def jpeg_scan_errors(
    files: list[Buffer], joined: np.ndarray, markers: np.ndarray
) -> list[str | None]:
    """``jpeg_scan_error`` of each file, given the files concatenated in order (``joined``,
    uint8) and where that concatenation holds a 0xFF followed by a non-zero byte (``markers``:
    their sorted positions, on whatever device searched them)."""
    sizes = np.fromiter(map(len, files), dtype=np.int64, count=len(files))
    ends = np.cumsum(sizes)
    errors: list[str | None] = [None] * len(files)
    suspects = _needs_walk(joined, np.asarray(markers, dtype=np.int64), ends - sizes, ends)
    if suspects:
        hits = _PositionHits(np.asarray(markers).tolist())
        for index in suspects:
            hits.base = int(ends[index] - sizes[index])
            errors[index] = _walk(files[index], hits)
    return errors


def _needs_walk(
    joined: np.ndarray, markers: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> list[int]:
    """The files (indices) that must be walked: all but those whose markers after their first
    SOS code (0xFFDA) are each a restart marker (0xFFD0-D7) or an end of image (0xFFD9).

    Those are clear without a walk: the scan data begins after a real SOS segment, at or after
    the file's first 0xFFDA, and the walk judges only markers after it, so it meets nothing
    but restart markers, which continue the scan, and an end of image, which ends it without
    error (as does a file with no 0xFFDA, which has no scan to judge). Anything else (a table
    between progressive scans, a fill byte, a reserved code, bytes of a segment's payload
    that look like a marker) sends the file to the exact walk.
    """
    if len(starts) == 0 or len(markers) == 0:
        return []
    owner = np.searchsorted(ends, markers, side="right")  # the file each position is in
    # A 0xFF ending one file, read with the next file's first byte, is no marker of either.
    inside = markers < ends[owner] - 1
    markers, owner = markers[inside], owner[inside]
    codes = joined[markers + 1]
    # Each file's first SOS code: positions are sorted, so it is the first of its owner's.
    sos_at, sos_owner = markers[codes == 0xDA], owner[codes == 0xDA]
    first = np.ones(len(sos_owner), dtype=bool)
    first[1:] = sos_owner[1:] != sos_owner[:-1]
    first_sos = np.full(len(starts), np.iinfo(np.int64).max)
    first_sos[sos_owner[first]] = sos_at[first]
    harmless = ((codes & 0xF8) == 0xD0) | (codes == _EOI)
    suspect = owner[(markers > first_sos[owner]) & ~harmless]
    return sorted(set(suspect.tolist())) if len(suspect) else []


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
