"""Image file reading and a fast integrity check for detection datasets.

One decoder: training reads with :func:`read_image_rgb` (OpenCV), and validation
(:func:`check_image_file`) decodes with that same function wherever it decodes.

Images are read as ``uint8`` arrays of shape ``[H, W, 3]`` in RGB order. EXIF
orientation is ignored everywhere (reading and checking), so the pixel grid is the
one stored in the file, the grid COCO / VOC annotations are drawn on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile

__all__ = ["IMAGE_SUFFIXES", "UnreadableImageWarning", "check_image_file", "list_image_files",
           "read_image_rgb", "read_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class UnreadableImageWarning(UserWarning):
    """A training image could not be decoded when read and was skipped (file named)."""

# A JPEG ends with the EOI marker FF D9. Some writers append padding or a trailer after
# it, so the marker is searched for in the last TAIL_BYTES bytes. Inside JPEG scan data
# every FF byte is followed by 00 (byte stuffing) or a restart marker D0-D7, so FF D9
# cannot occur in the tail of a file that was cut inside its scan data.
TAIL_BYTES = 4096
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _read_tail(path: Path, size: int, n: int) -> bytes:
    with path.open("rb") as f:
        f.seek(max(0, size - n))
        return f.read()


def check_image_file(
    path: str | Path, full_decode: bool = False
) -> tuple[str | None, tuple[int, int] | None]:
    """Check that an image file exists, is complete and that training can read it.

    Returns ``(problem, (h, w))``: ``problem`` is ``None`` for a good file, ``"missing"``
    when there is no such file, or a short reason (``"truncated"``, ``"empty file"``, the
    decoder's message) for an unreadable one. The fast path parses the header with PIL
    (which yields the size without decoding pixels) and checks the end of the file: the
    JPEG end-of-image marker (searched in the last 4 KiB, so a trailer longer than that
    after the marker reads as truncation), or the PNG ``IEND`` chunk; it takes well under
    a millisecond per image. Other formats (TIFF, ICO, TGA ...), and every file when
    ``full_decode`` is true, are decoded with :func:`read_image_rgb`, the decoder training
    uses (OpenCV), and must come out at the header's size; with ``full_decode`` PIL also
    decodes every pixel strictly (``LOAD_TRUNCATED_IMAGES`` off), which is then trusted
    over the end-marker check. Only a full decode finds a PNG or JPEG whose end is intact
    but whose body is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        return "missing", None
    size = path.stat().st_size
    if size == 0:
        return "empty file", None
    try:
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format
            if full_decode:
                im.load()
    except (OSError, ValueError, SyntaxError) as err:
        return f"cannot decode ({err})", None
    if width <= 0 or height <= 0:
        return "zero size in header", None
    if full_decode or fmt not in ("JPEG", "PNG"):
        try:
            decoded = read_image_rgb(path)
        except OSError:
            return f"cannot decode with OpenCV, the decoder training uses ({fmt} file)", None
        if decoded.shape[:2] != (height, width):
            return (f"decoded size {decoded.shape[1]}x{decoded.shape[0]} differs from the "
                    f"header's {width}x{height}"), None
    if full_decode and not ImageFile.LOAD_TRUNCATED_IMAGES:
        return None, (height, width)  # PIL decoded every pixel and would raise on truncation
    if fmt not in ("JPEG", "PNG"):
        return None, (height, width)
    tail = _read_tail(path, size, TAIL_BYTES if fmt == "JPEG" else len(PNG_END))
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated", None
    if fmt == "PNG" and tail != PNG_END:
        return "truncated", None
    return None, (height, width)


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as a ``uint8`` ``[H, W, 3]`` RGB array (EXIF orientation ignored).

    Raises:
        FileNotFoundError: no such file.
        OSError: the file cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if image is None:
        raise OSError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_images(
    paths: list[Path],
) -> tuple[list[Path], list[np.ndarray], list[tuple[Path, str]]]:
    """Read several files with :func:`read_image_rgb`, skipping (not raising on) bad ones.

    Returns ``(read_paths, images, failures)``: the paths that decoded and their images,
    in input order, and ``(path, reason)`` for every file that is missing or undecodable.
    """
    read_paths, images, failures = [], [], []
    for path in paths:
        try:
            images.append(read_image_rgb(path))
        except OSError as err:  # FileNotFoundError included
            failures.append((Path(path), str(err)))
            continue
        read_paths.append(Path(path))
    return read_paths, images, failures


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files (by suffix, :data:`IMAGE_SUFFIXES`) directly in ``folder``, sorted by name.

    Raises FileNotFoundError for a missing folder and ValueError for one without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files
