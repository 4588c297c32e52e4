"""Loads the load test's images: JPEGs shrunk to a longest side of 640 px and re-encoded at q95."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

logger = logging.getLogger(__name__)

#: The repository's own copy of the sample photographs (see tests/data/images/LICENSES.md).
DEFAULT_IMG_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "images"
JPEG_SUFFIXES = (".jpg", ".jpeg")


def prepare_jpeg(path: Path, *, max_side_px: int = 640, quality: int = 95) -> bytes:
    """Reads one image, shrinks it so its longest side is at most ``max_side_px`` and returns it
    re-encoded as JPEG at ``quality`` (what the reference client sends)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a decodable image")
    height, width = image.shape[:2]
    longest_px = max(height, width)
    if longest_px > max_side_px:
        scale = max_side_px / longest_px
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"{path}: JPEG encoding failed")
    return encoded.tobytes()


def load_images(
    img_dir: str | Path, *, limit: int = 1000, max_side_px: int = 640, quality: int = 95
) -> list[bytes]:
    """Prepares up to ``limit`` JPEGs of ``img_dir`` (sorted by name) with ``prepare_jpeg``.

    Files that do not decode are skipped with a warning; no usable image at all is an error.
    """
    folder = Path(img_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in JPEG_SUFFIXES)[:limit]
    images: list[bytes] = []
    for path in paths:
        try:
            images.append(prepare_jpeg(path, max_side_px=max_side_px, quality=quality))
        except ValueError as exc:
            logger.warning("skipping %s", exc)
    if not images:
        raise ValueError(f"no usable JPEG image in {folder}")
    mean_kib = sum(map(len, images)) / len(images) / 1024
    logger.info("loaded %d images from %s (mean %.1f KiB)", len(images), folder, mean_kib)
    return images
