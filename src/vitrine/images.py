"""Decoding and preprocessing: the only module that opens image files.

Every photo goes through :func:`open_image` (safe decode to upright RGB) and then
:func:`to_tensor_array` (resize policy + normalisation for the backbone).
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, get_args

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vitrine.config import ResizePolicy
from vitrine.errors import ImageError
from vitrine.photo_hashes import PHOTO_MAX_BYTES, read_whole, regular_file, unreadable_reason

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".avif", ".heic",
                              ".heif", ".gif", ".bmp", ".tif", ".tiff"})
BROWSER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp"})
"""Photos browsers show as they are; others (TIFF, HEIC, …) are sent as a JPEG copy
(thumbnail_jpeg)."""
WHITE = (255, 255, 255)

# Pillow's own bomb check is global state; we do our own check per call (see open_image), so
# switch the global one off rather than let it warn or raise with a different limit.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


MIN_SIDE, MAX_SIDE = 32, 1024
"""The backbone input sides a model may ask for, in pixels."""
DRAFT_FACTOR = 2
"""A JPEG decodes reduced to at least this many times the model's input side
(:attr:`Preprocessing.draft_size`), as card copies decode at twice theirs."""
RESIZE_POLICIES = get_args(ResizePolicy)


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded RGB photo becomes the backbone's input; recorded in the store manifest."""

    size: int = 224
    resize: str = "crop"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        """Refuse a description no photo can be prepared with (a damaged model.json): the
        input side within backbones' range, a known resize, three finite means and three
        finite positive deviations."""
        if not isinstance(self.size, int) or not MIN_SIDE <= self.size <= MAX_SIDE:
            raise ValueError(f"input size {self.size!r} is not a whole number of pixels from "
                             f"{MIN_SIDE} to {MAX_SIDE}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_POLICIES)}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v)
                                           and (name == "mean" or v > 0) for v in values):
                raise ValueError(f"{name} {list(values)!r} is not three finite numbers"
                                 + (" above 0" if name == "std" else ""))

    @property
    def draft_size(self) -> int:
        """The side a JPEG is decoded at, at the least, for this input (:func:`open_image`'s
        ``draft_size``): :data:`DRAFT_FACTOR` times the input's, so that the photo is
        scaled down by the resize after libjpeg's reduced decode, as a photo decoded whole is
        (:func:`open_image` halves it for a panorama that would decode over the pixel limit).
        At the input's side itself, a JPEG whose short side was 448, 896 or 1,792 px was
        decoded straight to 224 px by libjpeg's DCT scaling, sharper than any resize makes
        it: its vector was at a cosine down to 0.974 of the same photo decoded whole or sent
        as a PNG (0.9996 at 447 px)."""
        return DRAFT_FACTOR * self.size

    def as_dict(self) -> dict:
        return {"size": self.size, "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std)}


HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
"""ISO-BMFF brands of HEIF photos (what iPhones take): pillow-heif decodes them."""
AVIF_BRANDS = frozenset({b"avif", b"avis"})
"""Brands of AVIF photos (Pillow decodes them); an AVIF may name the generic ``mif1`` first."""


CONTAINER_FORMATS = {"avif": ["AVIF"], "heic": ["HEIF"]}
PHOTO_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
"""Pillow decoders a photo that is no ISO-BMFF container may use (JPEG's also opens MPO, the
multi-picture JPEGs phones write). Only these: Pillow's EPS reader runs Ghostscript on the
file, and an upload must never start a program."""


def container_kind(data: bytes) -> str | None:
    """'avif' or 'heic' for an ISO-BMFF photo (from the brands of its ``ftyp`` box), else
    None."""
    if data[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(data[:4], "big"), 256, len(data))
    brands = {data[8:12], *(data[i:i + 4] for i in range(16, end - 3, 4))}
    if brands & AVIF_BRANDS:
        return "avif"
    return "heic" if brands & HEIF_BRANDS else None


@functools.cache
def _heif_opener() -> None:
    """Teach Pillow HEIF, once, when the first such photo comes (its import costs ~50 ms)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


def is_image_path(path: Path) -> bool:
    """True when the file extension (any case) is one of the supported photo formats."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_photo(path: Path) -> bytes:
    """The bytes of the photo file at ``path``; :class:`ImageError` with the reason when it
    cannot be read (a folder, a device, no permission…)."""
    try:
        st = regular_file(path)
        with open(path, "rb") as fh:
            return read_whole(fh, st, PHOTO_MAX_BYTES)
    except IsADirectoryError:
        raise ImageError(str(path), "is a folder, not an image file.") from None
    except OSError as exc:
        raise ImageError(str(path), f"{unreadable_reason(exc)}.", exc.errno) from None


def open_image(source: Path | bytes, *, max_pixels: int = 40_000_000,
               draft_size: int | None = None, fit: bool = False,
               name: str | None = None) -> Image.Image:
    """Decode a photo into an upright 8-bit RGB image.

    Applies EXIF orientation, takes the first frame of animations, composites transparency on
    white and converts CMYK, grayscale, 16-bit and palette images (their colours from an ICC
    profile's space, or a PNG's gAMA, to sRGB: :func:`in_srgb`). Refuses
    images above ``max_pixels`` before decoding their pixels. ``draft_size`` lets JPEG
    decode at a reduced scale that is still at least that many pixels on its short side
    (half as many where that scale is over ``max_pixels``: a panorama; with ``fit``, on its
    long side: a copy to fit in a square of that side).
    Raises :class:`ImageError` with a one-sentence reason, naming the file (``name`` for
    bytes read from one).
    """
    name = name or (str(source) if isinstance(source, Path) else "uploaded image")
    data = read_photo(source) if isinstance(source, Path) else source
    if not data:
        raise ImageError(name, "the file is empty (0 bytes).", kind="empty")
    kind = container_kind(data)
    if kind == "heic":
        _heif_opener()
    _check_structure(data, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # an ISO-BMFF photo goes to its own decoder: pillow-heif, once loaded, also claims
            # AVIFs that name 'mif1' first, and cannot decode them
            img = Image.open(io.BytesIO(data), formats=CONTAINER_FORMATS.get(kind,
                                                                         PHOTO_FORMATS))
            if img.format in ("JPEG", "MPO"):
                frame = _check_jpeg(img, data, name, max_pixels)
                # a 50-MP phone photo decodes at 1/8 (libjpeg cannot scale a lossless one:
                # "broken data stream", so that decodes whole, within the pixel limit)
                if draft_size and frame not in LOSSLESS_FRAMES:
                    img.draft("RGB", _draft_request(img.size, draft_size, fit,
                                                    max_pixels))
            key = img.info.get("transparency")
            if img.mode == "RGB" and isinstance(key, tuple) and any(
                    tile.args == "RGB;16B" for tile in getattr(img, "tile", ())):
                # a 16-bit PNG's colour key, its pixels read as their high bytes
                img.info["transparency"] = tuple(v >> 8 for v in key)
            width, height = img.size  # what will be decoded
            if width * height > max_pixels:
                raise _too_many_pixels(name, width, height, max_pixels)
            if img.format == "BMP" and img.tile and img.tile[0][0] == "bmp_rle" and (
                    width * height > MAX_RLE_PIXELS or len(data) > MAX_RLE_BYTES):
                raise ImageError(name, f"a run-length compressed BMP of {width}x{height} "
                                       f"pixels in {len(data):,} bytes, over "
                                       f"{MAX_RLE_PIXELS:,} pixels or {MAX_RLE_BYTES:,} "
                                       "bytes (these decode slowly, pixel by pixel; save it "
                                       "as PNG or JPEG).")
            if max(width, height) > MAX_PHOTO_SIDE:
                raise ImageError(name, f"{width}x{height} pixels: a side longer than "
                                       f"{MAX_PHOTO_SIDE:,} pixels, more than JPEG and WebP allow "
                                       "(send a smaller copy).", kind="side")
            # the first frame of an animation or of a multi-page TIFF is the one open (asking
            # how many pages a TIFF has walks them all: 50 s for 90,000 empty ones)
            img.load()
            if img.format == "TIFF":
                img = _tiff_levels(img)
            return to_rgb(in_srgb(upright(img)))
    except ImageError:
        raise
    except UnidentifiedImageError:
        known = _signature_format(data)
        if known:  # (Pillow says the same of a header cut off and of a kind it does not
            # decode, a 12-bit JPEG, a float TIFF: "damaged" would say another copy may do)
            raise ImageError(name, f"a {known} file whose header cannot be read (damaged, cut "
                                   "off, or a kind of it that is not supported).") from None
        raise ImageError(name, "not a recognised image format.") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on corrupt files
        reason = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__  # (one line:
        # libheif's messages end in a line break)
        if "truncated" in reason.lower():
            reason = "the image data is truncated"
        elif reason == "could not create decoder object":  # (libwebp's, for a file cut off)
            reason = "the image data is damaged or truncated"
        raise ImageError(name, f"cannot decode the image ({reason}).",
                         kind="damaged") from None


MAX_JPEG_SCANS = 100
"""Scans a JPEG may have: a progressive photo has about ten; each costs a pass over the
picture, so thousands in a 1 MB upload took minutes to decode."""


def _check_jpeg(img: Image.Image, data: bytes, name: str, max_pixels: int) -> int | None:
    """Refuse a JPEG whose decoding would take minutes (thousands of scans) or gigabytes (one
    in several scans, progressive or a scan per colour, is held whole in memory whatever
    scale it is decoded at). Give an arithmetic-coded one its whole file in one block. The
    code of its start-of-frame marker."""
    scans, frame, steps = _jpeg_walk(data)
    if steps > MAX_JPEG_STEPS:
        raise ImageError(name, f"a JPEG with over {MAX_JPEG_STEPS:,} markers, segments or fill "
                               "bytes (photos have a few dozen; reading them would take "
                               "seconds).")
    if scans > MAX_JPEG_SCANS:
        raise ImageError(name, f"a JPEG in {scans:,} scans (photos have a few; decoding it "
                               "would take minutes).")
    width, height = img.size
    if scans > 1 and width * height > max_pixels:
        raise _too_many_pixels(name, width, height, max_pixels,
                               " (a JPEG in several scans, as progressive ones are, is decoded "
                               "whole, whatever the size it is needed at)")
    if frame in ARITHMETIC_FRAMES:  # libjpeg's arithmetic decoder cannot wait for more data:
        # in Pillow's 64 kB blocks one over 64 kB failed ("broken data stream"). The bytes are
        # in memory already (BytesIO hands them over whole, no copy)
        img.decodermaxblock = max(img.decodermaxblock, len(data))
    return frame


_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""A marker after entropy-coded data: not a stuffed 0xFF (FF 00), a restart (FF D0-D7) or
fill (FF FF)."""


MAX_HEADER_STEPS = 1_000
"""Steps Pillow's parser may take, in Python, through a header before the picture: a JPEG's
segments and fill bytes, a PNG's chunks. A photo has a few dozen; 10 MB of fill bytes or
empty comments took 5 s of a server's CPU an upload (helper-153)."""
MAX_PHOTO_SIDE = 65_535
"""The longest side a photo may have (as JPEG and WebP allow): a 1 x 39,000,000 PNG of 76 KB,
under the pixel limit, took 3 GB to decode and hash (helper-153)."""


def _jpeg_header_markers(data: bytes) -> int:
    """The steps Pillow takes through a JPEG's header before its first scan, as its own
    parser walks it (``JpegImagePlugin.MARKER``: a marker with a handler is skipped by its
    length; one without, FF 00, a fill byte and each byte that is no marker are a step
    each, in Python), counted up to one past :data:`MAX_HEADER_STEPS` (so at most that many
    steps here). A code Pillow does not know ends its walk ("no marker found"), and this."""
    from PIL.JpegImagePlugin import MARKER

    count, at = 0, 2  # past the start-of-image marker
    while count <= MAX_HEADER_STEPS and at + 1 < len(data):
        if data[at] != 0xFF:  # bytes that are no marker: stepped over one by one
            found = data.find(b"\xff", at, at + MAX_HEADER_STEPS + 1)
            count += (found if found != -1 else min(len(data), at + MAX_HEADER_STEPS + 1)) - at
            at = found if found != -1 else len(data)
            continue
        code = 0xFF00 | data[at + 1]
        count += 1
        if code == 0xFFFF:  # fill byte
            at += 1
        elif code == 0xFF00:
            at += 2
        elif code not in MARKER or code == 0xFFDA:  # Pillow stops (or the picture starts)
            break
        elif MARKER[code][2] is None:  # no length (start or end of image, restarts, …)
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return count


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SMALL_BLOCKS = 20 * MAX_HEADER_STEPS
"""Blocks Pillow may step through, in Python, where a photo may have many, beyond one a
kilobyte of the file (a PNG's picture chunks: an encoder writing a chunk a row) or one in 64
bytes (a GIF's blocks, sub-blocks and stray bytes before its picture: an XMP packet is read
as sub-blocks, one in about 72 bytes, and Photoshop's grow to megabytes, helper-168). 10 MB
of empty GIF comments took 1 s of a server's CPU an upload, one comment of 4.5 million
one-byte sub-blocks 460 MB, 800,000 empty PNG picture chunks 0.9 s (helper-157)."""
MAX_TIFF_PIECES = 32_768
"""Strips or tiles a TIFF's first page may be cut into whatever its size; more only as many
as its size needs (16 x 16 pixels a tile at the least, a plane a colour: 16 x 16 tiles of a
12-megapixel photo are 47,000, helper-168), up to :data:`MOST_TIFF_PIECES`. Pillow builds a
Python object for each when it opens the file and decodes them one by one: 4.9 million for
64 x 64 pixels took 17 s and 1.4 GB (helper-157)."""
MOST_TIFF_PIECES = 160_000
"""The most strips or tiles a TIFF may have (40 megapixels in 16 x 16 tiles, or 12 in three
planes of them): about a second of Pillow's time; 562,500 claimed by a 4.5 MB file took 4.3 s
and 0.5 GB (helper-169)."""
MAX_RLE_PIXELS = 1 << 21
"""Pixels of a run-length compressed BMP (a rare, old format): Pillow decodes it in Python,
a step a run or a padded pixel, and a 3.5 kB one of 39 megapixels took 4.5 s (helper-157);
2 megapixels (1600 x 1200 fits) take under a second at worst (helper-169: 0.8 s)."""
MAX_RLE_BYTES = 1 << 21
"""Bytes of a run-length compressed BMP: each two may be a step (a move by nothing)."""


def _check_structure(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse, before Pillow reads it, a file whose structure Pillow would walk in Python
    for seconds: a JPEG's header segments, a PNG's chunks, a GIF's blocks, a TIFF's strips
    (as many as a picture of up to ``max_pixels`` may need)."""
    if data[:2] == b"\xff\xd8" and _jpeg_header_markers(data) > MAX_HEADER_STEPS:
        raise ImageError(name, f"a JPEG whose header holds over {MAX_HEADER_STEPS:,} segments "
                               "or fill bytes (photos have a few dozen; reading them would "
                               "take seconds).")
    if data[:8] == PNG_SIGNATURE:
        others, pieces = _png_chunks(data)
        if others > MAX_HEADER_STEPS:
            raise ImageError(name, f"a PNG with over {MAX_HEADER_STEPS:,} chunks besides its "
                                   "picture (photos have a few; reading them would take "
                                   "seconds).")
        if pieces > (limit := _png_piece_limit(data)):
            raise ImageError(name, f"a PNG whose picture is cut into over {limit:,} chunks, "
                                   "most of them almost empty (reading them would take "
                                   "seconds).")
    if data[:4] == b"GIF8" and _gif_steps(data) > (limit := _gif_limit(data)):
        raise ImageError(name, f"a GIF with over {limit:,} blocks or stray bytes "
                               "before its picture (photos have a few; reading them would "
                               "take seconds).")
    fields, pieces, needed, (width, height) = _tiff_fields(data)
    if fields > MAX_HEADER_STEPS:
        raise ImageError(name, f"a TIFF whose header holds a table of {fields:,} fields, over "
                               f"{MAX_HEADER_STEPS:,} (photos have a few dozen; reading them "
                               "would take seconds).")
    if pieces > MAX_TIFF_PIECES and width * height > max_pixels:  # (said as such)
        raise _too_many_pixels(name, width, height, max_pixels)
    allowed = max(MAX_TIFF_PIECES, min(needed, MOST_TIFF_PIECES))
    if pieces > allowed:
        why = ("the most taken: save it in larger tiles or strips" if needed > allowed else
               "what its size needs at most")
        raise ImageError(name, f"a TIFF whose picture is cut into {pieces:,} strips or tiles, "
                               f"over {allowed:,} ({why}; reading them would take seconds).")


def _gif_limit(data: bytes) -> int:
    """The steps a GIF may take before its picture (:data:`MAX_SMALL_BLOCKS`; the part that
    grows with the file at most 200,000, an XMP packet of 14 MB: a 512 MB catalogue file
    was allowed 8 million, seconds, helper-169)."""
    return MAX_SMALL_BLOCKS + min(len(data) // 64, 200_000)


def _png_piece_limit(data: bytes) -> int:
    """The picture (IDAT) chunks a PNG may have: :data:`MAX_SMALL_BLOCKS`, and one a kilobyte
    beyond (encoders write 8 to 64 kB a chunk)."""
    return MAX_SMALL_BLOCKS + len(data) // 1024


def _png_chunks(data: bytes) -> tuple[int, int]:
    """(Chunks other than the picture's, the picture's) of a PNG as Pillow reads them, one by
    one in Python (10 MB of empty chunks before the picture took 2 s: helper-155; after it,
    helper-157): up to the end (IEND), or an animation's next frame; counted up to one past
    their limits."""
    others = pieces = 0
    at, frames, pictured, framed, shown = 8, None, False, False, 0
    limit = _png_piece_limit(data)
    while others <= MAX_HEADER_STEPS and pieces <= limit and at + 8 <= len(data):
        kind = data[at + 4:at + 8]
        length = int.from_bytes(data[at:at + 4], "big")
        if kind == b"IEND" or (kind == b"fcTL" and pictured and (frames or 1) + shown > 1):
            break
        if kind == b"IDAT":
            pieces += 1
            if not pictured:  # a picture before any frame's control is shown as a frame
                # of its own (Pillow's default_image), an animation of one frame then two
                shown = int(frames is not None and not framed)
            pictured = True
        else:
            framed |= kind == b"fcTL"

            others += 1
            if kind == b"acTL" and not pictured:  # as Pillow's chunk_acTL: a second one, or
                # one of no frames or too many, is no animation (nor stops the walk)
                n = int.from_bytes(data[at + 8:at + 12], "big")
                frames = n if frames is None and length >= 8 and 0 < n <= 0x80000000 \
                    else None
        at += 12 + length
    return others, pieces


def _gif_steps(data: bytes) -> int:
    """The steps Pillow takes through a GIF before its first picture, as its parser walks it
    (``GifImagePlugin._seek``): an extension and each of its sub-blocks, each stray byte,
    counted up to one past :func:`_gif_limit`."""
    flags = data[10] if len(data) > 10 else 0
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # past the global palette
    count, limit = 0, _gif_limit(data)
    while count <= limit and at < len(data) and data[at] not in b",;":
        count += 1
        if data[at] != 0x21:  # a stray byte, stepped over alone
            at += 1
            continue
        at += 2  # the extension's introducer and label, then its sub-blocks
        while count <= limit and at < len(data):
            size = data[at]
            at += 1 + size
            if not size:
                break
            count += 1
    return count


TIFF_PREFIXES = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b",
                 b"II\x2b\x00")
"""The starts Pillow opens as TIFF (``TiffImagePlugin.PREFIXES``: the byte order from the
first two bytes, BigTIFF when the third is 43, whatever the fourth)."""
TIFF_SUB_TABLES = (34665, 34853)
"""Fields of a TIFF's first table that point at tables Pillow reads too (EXIF, GPS)."""


def _tiff_fields(data: bytes) -> tuple[int, int, int, tuple[int, int]]:
    """(The most fields a table Pillow reads of a TIFF holds: the first page's and its EXIF
    and GPS ones, walked in Python, three times; the strips or tiles its first page is cut
    into, as the counts of its offset and byte-count fields say; the most a picture of its
    size needs: 16 x 16 pixel tiles or one-row strips, a plane a colour; its size), read as
    Pillow reads the header, without unpacking the fields; zeros for another format."""
    if data[:4] not in TIFF_PREFIXES or len(data) < 16:
        return 0, 0, 0, (0, 0)
    endian = "little" if data[:2] == b"II" else "big"
    big = data[2] == 43
    first = int.from_bytes(data[8:16] if big else data[4:8], endian)
    table = _tiff_table(data, first, endian, big)
    if table is None:
        return 0, 0, 0, (0, 0)

    def value(tag: int, default: int = 0) -> int:
        """The field's (first) value, held in the table: as long as its type says."""
        found = np.flatnonzero(table["tag"] == tag)
        if not len(found):
            return default
        start = first + (8 if big else 2) + int(found[0]) * table.itemsize + (12 if big else 8)
        size = {3: 2, 16: 8, 18: 8}.get(int(table["type"][found[0]]), 4)
        return int.from_bytes(data[start:start + size], endian)

    fields = len(table)
    pieces = int(table["count"][np.isin(table["tag"], (273, 279, 324, 325))].max(initial=0))
    for tag in TIFF_SUB_TABLES:
        sub = _tiff_table(data, value(tag), endian, big)
        fields = max(fields, 0 if sub is None else len(sub))
    planes = min(4, max(1, value(277, 1))) if value(284, 1) == 2 else 1
    width, height = value(256), value(257)
    # 16 x 16 tiles (each side in whole tiles), or strips of a row (a tall, narrow picture)
    needed = max(-(-width // 16) * -(-height // 16), height) * planes
    return fields, pieces, needed, (width, height)


def _tiff_table(data: bytes, at: int, endian: str, big: bool) -> np.ndarray | None:
    """The fields of the TIFF table (IFD) at ``at`` that the file holds, as a numpy record
    array (tag, type, count, value), or None where there is none."""
    width = 8 if big else 2  # the field count's bytes
    if at <= 0 or at + width > len(data):
        return None
    order = "<" if endian == "little" else ">"
    entries = np.dtype([("tag", order + "u2"), ("type", order + "u2"),
                        ("count", order + ("u8" if big else "u4")),
                        ("value", order + ("u8" if big else "u4"))])
    wanted = int.from_bytes(data[at:at + width], endian)
    held = min(wanted, (len(data) - at - width) // entries.itemsize)
    return np.frombuffer(data, entries, count=held, offset=at + width)


def _tiff_levels(img: Image.Image) -> Image.Image:
    """A 16-bit grey TIFF's levels as Pillow's 16-bit modes mean them: white-is-zero ones
    inverted (they came out as negatives), signed ones (0 to 32,767) doubled (they came out
    half as bright)."""
    tags = getattr(img, "tag_v2", {})
    if tags.get(258) not in (16, (16,)):
        return img
    if img.mode.startswith("I;16") and tags.get(262) == 0:
        levels = Image.fromarray(65535 - np.asarray(img).astype("<u2"))  # (mode I;16)
    elif img.mode == "I" and tags.get(339) in (2, (2,)):
        levels = Image.fromarray(np.clip(np.asarray(img), 0, 32767).astype("<u2") * 2)
    else:
        return img
    levels.info.update(img.info)  # (its ICC profile: in_srgb)
    return levels


ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
"""EXIF orientation → the turn that makes the photo upright (as ``ImageOps.exif_transpose``)."""


def upright(img: Image.Image) -> Image.Image:
    """The photo turned as its EXIF (or XMP) orientation says. Not ``ImageOps.exif_transpose``:
    it also writes the EXIF block again, and a field it cannot write (a resolution stored as
    a byte, as some cameras do) lost the turn: the photo was embedded sideways (helper-157).
    An EXIF block that cannot be read leaves the photo as stored, and so does one whose
    first table holds over :data:`MAX_HEADER_STEPS` fields (:func:`_exif_fields`)."""
    if _exif_fields(img) > MAX_HEADER_STEPS:
        return img
    try:
        turn = ORIENTATIONS.get(img.getexif().get(0x0112))
    except Exception:  # noqa: BLE001 - a broken EXIF block: Pillow raises many kinds
        return img
    return img.transpose(turn) if turn is not None else img


def _exif_fields(img: Image.Image) -> int:
    """How many fields the first table of the photo's EXIF block holds (a PNG's eXIf chunk or
    its "Raw profile type exif" text, a WebP's, AVIF's or HEIC's EXIF, a JPEG's APP1), read
    without unpacking them; 0 for none or one that cannot be read. Pillow walks them one by
    one, in Python: a 1-pixel PNG of 786 kB with 65,535 of them held the interpreter 0.2 s
    an upload (a TIFF's own tables are bounded by :func:`_check_structure`)."""
    exif = img.info.get("exif")
    raw = img.info.get("Raw profile type exif")
    if exif is None and isinstance(raw, str):  # (as Pillow's getexif reads it)
        try:
            exif = bytes.fromhex("".join(raw.split("\n")[3:]))
        except ValueError:
            return 0
    if not isinstance(exif, bytes | bytearray):
        return 0
    data = bytes(exif[6:] if exif[:6] == b"Exif\x00\x00" else exif)
    if data[:2] not in (b"II", b"MM") or len(data) < 8:
        return 0
    endian = "little" if data[:2] == b"II" else "big"
    table = _tiff_table(data, int.from_bytes(data[4:8], endian), endian, False)
    return 0 if table is None else len(table)


PROFILED_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB", "I;16": "RGB",
                  "I;16L": "RGB", "I;16B": "RGB"}
"""The modes whose ICC profile is applied (:func:`in_srgb`), and the mode each becomes (a
grey photo's profile is a grey one: its greys become sRGB's, as browsers show them)."""


def in_srgb(img: Image.Image) -> Image.Image:
    """The photo's pixels in sRGB, as browsers show them and as the model was trained on, from
    the colour space its ICC profile names (a camera's Adobe RGB, a phone's Display P3, a
    press's CMYK, a grey photo's Gray Gamma 1.8 or Dot Gain 20 %): they were read as sRGB, an
    Adobe RGB photo's vector at a cosine down to 0.978 of the same photo in sRGB, and card
    copies, which carry no profile, shown dull. A grey photo with alpha, or with a colour key
    (:func:`to_rgb`), comes back as RGBA, its transparency kept. A PNG without a profile
    whose gAMA chunk names a gamma other than sRGB's is read with it (:func:`_png_gamma`). As
    it is without either, or with a profile that cannot be read or does not fit its mode."""
    profile = img.info.get("icc_profile")
    if not profile:
        return _png_gamma(img)
    # (a palette PNG's colours are the profile's too: the same Display P3 photo quantised
    # kept its P3 red 219 where its RGB copy read 240)
    img = _unpaletted(img)
    colours, alpha = img, None
    if img.mode == "LA":
        colours, alpha = img.getchannel("L"), img.getchannel("A")
    elif img.mode in PROFILED_MODES and img.info.get("transparency") is not None:
        colours, alpha = img, _key_mask(img)
    if colours.mode not in PROFILED_MODES or (alpha is None and "transparency" in img.info):
        return img
    transform = _srgb_transform(bytes(profile), colours.mode)
    if transform is None:
        return img
    try:
        out = transform.apply(colours)
    except Exception:  # noqa: BLE001 - littleCMS's refusals: the photo as it is, as browsers
        return img
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _key_mask(img: Image.Image) -> Image.Image | None:
    """The alpha a colour key (a PNG's tRNS) gives ``img`` (L, RGB or 16-bit grey): 0 where a
    pixel is the key's colour, else 255; None for a key that is no colour of the mode."""
    key, arr = img.info["transparency"], np.asarray(img)
    if arr.ndim == 3:
        if not isinstance(key, tuple) or len(key) != arr.shape[2]:
            return None
        hidden = (arr == np.asarray(key, arr.dtype)).all(axis=2)
    elif isinstance(key, int):
        hidden = arr == key
    else:
        return None
    return Image.fromarray(np.where(hidden, np.uint8(0), np.uint8(255)), "L")


SRGB_GAMMA = (0.45, 0.4555)
"""gAMA values a PNG without a profile may name and be read as sRGB (1/2.2 = 0.45455, what
encoders write for sRGB); others are applied (:func:`_png_gamma`)."""


def _png_gamma(img: Image.Image) -> Image.Image:
    """A PNG (the one photo format Pillow reads a gamma of) without an ICC profile or sRGB
    chunk, whose gAMA chunk names another gamma than sRGB's (an old Mac's 1/1.8, a linear
    export's 1.0), with its levels read as that gamma and written in sRGB's, as browsers
    show it (sRGB's primaries: cHRM aside): its pixels were read as sRGB, a gamma-1.8
    photo's 128 where Chromium shows 146. 16-bit grey and a colour key (tRNS) too: left as
    they were, the same picture losslessly re-encoded (an optimiser's RGBA cut-out made RGB
    with a colour key) read otherwise, its vector at a cosine of 0.993 of the original's; a
    keyed photo comes back with its alpha (L as LA, RGB as RGBA)."""
    gamma = img.info.get("gamma")
    if "srgb" in img.info or not isinstance(gamma, int | float) or not 0.01 <= gamma <= 100 \
            or SRGB_GAMMA[0] <= gamma <= SRGB_GAMMA[1]:
        return img
    img = _unpaletted(img)
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L"):
        return img
    alpha = None
    if img.info.get("transparency") is not None:
        alpha = _key_mask(img) if img.mode not in ("LA", "RGBA") else None
        if alpha is None:  # (a key that is no colour of the mode)
            return img
    if img.mode.startswith("I;16"):
        levels = np.asarray(img).astype(np.uint16, copy=False)
        out = Image.fromarray(_gamma_levels(gamma, 65536)[levels], "L")
    else:
        table = _gamma_levels(gamma, 256).tolist()
        bands = len(img.getbands())
        out = img.point(table * (bands - 1) + list(range(256)) if img.mode in ("LA", "RGBA")
                        else table * bands)
        out.info.pop("transparency", None)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _gamma_levels(gamma: float, levels: int) -> np.ndarray:
    """The 8-bit sRGB level of each of ``levels`` levels encoded with ``gamma``."""
    linear = (np.arange(levels) / (levels - 1.0)) ** (1.0 / gamma)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear,
                       1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(np.clip(encoded, 0, 1) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _srgb_transform(profile: bytes, mode: str):
    """The littleCMS transform from ``profile`` (ICC bytes) in ``mode`` to sRGB, thread-safe
    (no cache of the last pixel); None for a profile that cannot be read or applied."""
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode,
                                       PROFILED_MODES[mode], flags=ImageCms.Flags.NOCACHE)
    except Exception:  # noqa: BLE001 - a damaged profile, one of another colour space
        return None


def _signature_format(data: bytes) -> str | None:
    """The format a file Pillow could not open begins like, else None."""
    if data[:4] in TIFF_PREFIXES:
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    if data[:4] == b"GIF8":
        return "GIF"
    return None


ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""Start-of-frame markers of arithmetic-coded JPEGs (sequential, progressive, lossless, and
their hierarchical kinds)."""
LOSSLESS_FRAMES = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
"""Start-of-frame markers of lossless JPEGs (Huffman or arithmetic, hierarchical or not)."""


BROWSER_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
"""Start-of-frame markers of the JPEGs every browser shows (Huffman-coded: baseline, extended,
progressive); an arithmetic-coded or lossless one (no browser shows the latter) is sent as a
copy (helper-174)."""
BROWSER_FRAME_HEAD = 1 << 20
"""How far into a JPEG its start-of-frame marker is looked for (metadata segments come
before it: an EXIF block, an ICC profile in pieces of 64 kB)."""


def browser_jpeg(fh: BinaryIO) -> bool:
    """Whether the JPEG open in ``fh`` (read from its start) is of a coding browsers show:
    not when its frame is found and is not; a frame not found (more metadata before it than
    :data:`BROWSER_FRAME_HEAD`, stray bytes between segments, which libjpeg passes over) is
    sent as it is, as before (a copy drops the colour profile: helper-175)."""
    head = b""
    while len(head) < BROWSER_FRAME_HEAD and (more := fh.read(64 * 1024)):
        head += more
        if (frame := _jpeg_walk(head)[1]) is not None:
            return frame in BROWSER_FRAMES
    return True


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan segments of the (first) picture of a JPEG (see :func:`_jpeg_walk`)."""
    return _jpeg_walk(data)[0]


MAX_JPEG_STEPS = 10 * MAX_HEADER_STEPS
"""Markers, segments and fill bytes :func:`_jpeg_walk` steps through, in Python, before it
stops: 10 MB of them after the first scan (past the header Pillow walks) held the
interpreter 0.7 s an upload (helper-284)."""


def _jpeg_walk(data: bytes) -> tuple[int, int | None, int]:
    """(Start-of-scan segments, the first start-of-frame marker's code or None, the steps
    taken, at most one past :data:`MAX_JPEG_STEPS`) of the (first) picture of a JPEG,
    walking its markers: metadata segments are skipped by their length and what follows the
    end of the picture (a phone's motion-photo video, an MPO's second picture) is not
    read."""
    scans, at, frame, steps = 0, 2, None, 0  # past the start-of-image marker
    while at + 4 <= len(data) and data[at] == 0xFF:
        steps += 1
        if steps > MAX_JPEG_STEPS:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:  # end of the picture
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        if frame is None and 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = marker  # (C4 is a Huffman table, C8 reserved, CC arithmetic conditioning)
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _JPEG_MARKER.search(data, at)
            if found is None:
                break
            at = found.start()
    return scans, frame, steps


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int,
                     why: str = "") -> ImageError:
    return ImageError(name, f"{width}x{height} pixels is over the limit of {max_pixels:,} "
                            f"pixels{why} (possible decompression bomb; a real photo this "
                            "large: raise VITRINE_MAX_IMAGE_PIXELS or scale it down).",
                      kind="pixels")


def _eight_bit(raw: np.ndarray, scale: float, pixels: int = 1 << 18) -> np.ndarray:
    """``raw`` × ``scale``, clipped to 0–255 and rounded, as 8 bits: a band of about
    ``pixels`` pixels at a time (float64 copies of the whole image took 1.2 GB for a
    40-megapixel 16-bit or 32-bit photo of 258 kB, one upload)."""
    out = np.empty(raw.shape, np.uint8)
    rows = max(1, pixels // max(1, raw.shape[1]))
    for start in range(0, raw.shape[0], rows):
        band = raw[start:start + rows].astype(np.float64)
        band *= scale
        np.clip(band, 0, 255, out=band)
        out[start:start + rows] = np.rint(band, out=band)
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency on white."""
    mode = img.mode
    key = img.info.get("transparency")  # (a PNG's colour key: tRNS, what optipng writes for
    # a cut-out whose alpha is all or nothing; it was embedded as its colour, black)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        raw = np.asarray(img)
        peak = 65535.0 if mode.startswith("I;16") or raw.max(initial=0) > 255 else 255.0
        arr = _eight_bit(raw, 255.0 / peak)
        if not isinstance(key, int):
            return Image.fromarray(arr, "L").convert("RGB")
        img = Image.fromarray(np.dstack([arr, np.where(raw == key, np.uint8(0),
                                                       np.uint8(255))]), "LA")
    if mode == "F":
        raw = np.asarray(img)
        return Image.fromarray(_eight_bit(raw, 255.0 if raw.max(initial=0) <= 1.0 else 1.0),
                               "L").convert("RGB")
    if mode == "P":
        img = _unpaletted(img)
    elif mode in ("L", "1", "RGB") and key is not None:  # (a 16-bit RGB key: see open_image)
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _unpaletted(img: Image.Image) -> Image.Image:
    """A palette image as RGB, or RGBA where it has a transparent colour; others as they are."""
    if img.mode != "P":
        return img
    return img.convert("RGBA" if "transparency" in img.info else "RGB")


def _draft_request(size: tuple[int, int], side: int, fit: bool,
                   max_pixels: int | None = None) -> tuple[int, int]:
    """The size a JPEG's reduced decode must keep (Pillow's draft keeps both sides at least
    as large): ``side`` on the short side, or with ``fit`` twice the copy that fits a square
    of ``side`` (room for :func:`thumbnail`'s resampling; a photo's copy decodes at the scale
    it did before). Keeping the short side of a 60,000 × 700 banner at 448 px decoded it at
    full scale, over the pixel limit, and its card was a 404."""
    if not fit:  # (half the side where the side asked decodes over the pixel limit: a
        # 52,000 x 800 panorama, decoded at 1/2 for the model's 224 px, is not refused at 448)
        if max_pixels is not None and side > 1 and _drafted_pixels(size, side) > max_pixels:
            side //= 2
        return side, side
    scale = 2 * side / max(size)
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _drafted_pixels(size: tuple[int, int], side: int) -> int:
    """The pixels a JPEG of ``size`` decodes to with a draft of ``side`` on both sides: at
    the largest of libjpeg's scales 1/8, 1/4, 1/2 that keeps both at least ``side``, as
    Pillow's draft chooses it."""
    fits = min(size[0] // side, size[1] // side)
    scale = next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)
    return -(-size[0] // scale) * -(-size[1] // scale)


def thumbnail(path: Path, side: int, max_pixels: int) -> Image.Image:
    """The photo scaled down to fit ``side``×``side`` (never up): upright, RGB, transparency
    on white, as :func:`open_image` decodes it; a JPEG decodes at a reduced scale first, so
    a large phone photo costs little."""
    img = open_image(path, max_pixels=max_pixels, draft_size=side, fit=True)
    img.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def thumbnail_jpeg(path: Path, side: int, max_pixels: int) -> bytes:
    """:func:`thumbnail` as JPEG, without a colour profile: its pixels are sRGB already
    (:func:`in_srgb`), as a browser shows a JPEG without one (a Display P3 photo's copy,
    its pixels read as sRGB, showed dull on the product page)."""
    img = thumbnail(path, side, max_pixels)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


def animated(fh: BinaryIO) -> bool:
    """Whether the picture open in ``fh`` (read from its start) has more than one frame
    (GIF, APNG, WebP): Pillow reads its header and frame headers, not its pixels. False for
    one it cannot open."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(fh, formats=PHOTO_FORMATS)
            return bool(getattr(img, "is_animated", False))
    except Exception:  # noqa: BLE001 - a file Pillow cannot read: the copy says why
        return False


def resize_square(img: Image.Image, size: int, policy: str) -> Image.Image:
    """Make a ``size``×``size`` image: 'pad' letterboxes on white, 'crop' centre-crops,
    'squash' stretches."""
    if policy == "squash":
        return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if policy == "crop":
        return ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    if policy == "pad":
        return ImageOps.pad(img, (size, size), Image.Resampling.BILINEAR, color=WHITE)
    raise ValueError(f"unknown resize policy {policy!r}; use pad, crop or squash")


def to_array(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize and normalise an RGB image into a float32 CHW array for the backbone."""
    square = resize_square(img, prep.size, prep.resize)
    std = np.asarray(prep.std, np.float32)
    scale = (1.0 / (255.0 * std))[:, None, None]
    shift = (np.asarray(prep.mean, np.float32) / std)[:, None, None]
    # (x/255 − mean)/std as one multiply and one in-place subtract into the CHW result
    # (measured 30–40 % faster than four whole-array temporaries; same values within 1e-6)
    out = np.empty((3, prep.size, prep.size), np.float32)
    np.multiply(np.asarray(square, np.float32).transpose(2, 0, 1), scale, out=out)
    out -= shift
    return out


FRAME_TOLERANCE = 24
"""How far (the largest of the three channels, 0–255) a pixel may be from a frame's colour and
still be frame: a re-encoded JPEG's flat background stays within a few levels of it."""
FRAME_NOISE = 0.01
"""A row or column is content when more than this share of its pixels (and more than two)
differ from the frame: a stray speck or a JPEG artefact does not widen the product's box."""
MIN_FRAME = 0.3
"""The frame must take at least this share of the width (left and right together) and of the
height (top and bottom): a phone screenshot's product 40–60 % of its width leaves 40–60 %
(one the whole width of the screen needs no cutting out: the centre crop of a tall page is
it). Of the demo catalogue's product photos on white, 24 of 1,016 leave as much (233 at 20 %:
a second pass of the model for each, that changed none of their results; see
benchmarks/screenshot_search.py)."""
FRAME_MARGIN = 0.05
"""The margin left around the product cut out of a frame, a share of its longer side on each
side (about what the catalogue's photos on white leave)."""
MIN_PAGE_SHARE = 0.1
"""A page's colour (its most common) must take at least this share of the picture."""
BAND_MIN_HEIGHT = 0.08
"""A band of content lower than this share of the page's width (its shorter side) is a line
of text or a row of icons, not the product's photo (a price in 110-px type on a 1170-px
screen is 0.07)."""
BAND_MIN_INK = 0.3
"""A band whose box is less than this share off the page's colour, crossed by
:data:`TEXT_STROKES` strokes or more a row, is text. Of the
demo's photos in a light page, white trainers on white leave 0.2; a line of text 0.15-0.17,
seven or eight strokes a row."""
TEXT_STROKES, TEXT_HEIGHT = 6, 0.15
"""(and the text lower than the second share of the width: a few lines, the product's name in
two; a taller band so sparse is a photo's, a product's on the page's colour)"""
BAR_HEIGHT, BAR_WIDTH = 0.25, 0.7
"""A band lower than the first share of the page's width and wider than the second, a block
most of it one colour, is a bar or a button (0.13 x 0.9 for a button, 1.0 wide for a bar; a
photo on its own backdrop as wide is higher: 0.52 for one 4:3 at 70 %)."""
BUTTON_ASPECT = 3
"""A low block most of it one colour at least this many times as wide as high is a button
whatever the page's width (a tablet's or a landscape page's "Add to cart" in the column of
text beside the photo is a third of the width; a product photo on its own backdrop is 1:1 to
4:3)."""
MERGE_GAP = 0.05
"""Bands of content (not text, not a bar) no further apart than this share of the page's
width are one product's (a gap of rows as light as the page across it). A band parted by a
wider gap of columns of the page's colour whose side is all text or bars (a photo with the
product's name, price and button in a column beside it: a tablet's or a landscape layout)
is the rest of it."""
STRIP_BLOCKS = 3
"""A band of this many blocks or more side by side, parted by columns of the page's colour
(more than two), each at least half :data:`BAND_MIN_HEIGHT` of the page's shorter side wide
and a third of the band's height high, is a row of thumbnails or of other products (a
gallery's strip under the photo, "recommended for you"), not the product's photo (a pair of
shoes is two; a sale badge and a heart on a photo's corners are far lower than its product):
the product only where no other band may be, and never merged with the photo above it."""
NOTIFICATION_TOP = 0.1
"""A band as wide as the page and mostly of the page's colour that starts within this share of
the page's height from its top is a notification over the status and app bars, not the
product."""
PHONE_ASPECT = 1.6
"""A page at least this many times as high as wide is a phone's screen (9:19.5 today, 9:16
before): a product photo may take its whole width."""
FRAME_SIDE = 512
"""The frame is looked for in a copy reduced (by a whole factor, averaging) to about this many
pixels on its longer side: a 1170 x 2532 PNG screenshot took 110 ms at full size, a 40-megapixel
upload would have taken seconds and int16 copies of hundreds of MB."""


def framed_product(img: Image.Image, *, max_side: int | None = None) -> Image.Image | None:
    """The product inside a wide uniform frame (a phone screenshot: the photo in the middle of a
    tall white or black page, with or without an app's bars, text and buttons around it),
    cut out and centred on a square of the colour around it with :data:`FRAME_MARGIN`; None
    when the photo has no such frame (:func:`product_box`)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    found = framed_box(img)
    if found is None:
        return None
    (left, top, right, bottom), colour = found
    box_w, box_h = right - left, bottom - top
    side = round(max(box_w, box_h) * (1 + 2 * FRAME_MARGIN))
    crop_box = (left, top, right, bottom)
    if max_side and side > max_side:  # made at most ``max_side`` square, scaled as cut out
        # (a 40-megapixel PNG 16 times as wide as high made a square of 500 megapixels,
        # 2 GB and 5 s for one upload: helper-229)
        scale = max_side / side
        box_w, box_h = max(1, round(box_w * scale)), max(1, round(box_h * scale))
        side = max_side
        piece = img.resize((box_w, box_h), Image.Resampling.BILINEAR, box=crop_box,
                           reducing_gap=2.0)
    else:
        piece = img.crop(crop_box)
    square = Image.new("RGB", (side, side), tuple(int(c) for c in colour))
    square.paste(piece, ((side - box_w) // 2, (side - box_h) // 2))
    return square


def framed_box(img: Image.Image) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """:func:`product_box` of an RGB photo, looked for in a copy reduced to about
    :data:`FRAME_SIDE`: the box in the photo's own pixels, a reduced pixel wider on each side
    (one that averages a few columns of the photo with the frame may read as frame), and the
    page's colour; None when the photo has no frame."""
    factor = max(1, max(img.size) // FRAME_SIDE)
    found = product_box(np.asarray(img.reduce(factor) if factor > 1 else img))
    if found is None or factor == 1:
        return found
    (left, top, right, bottom), colour = found
    return (max(0, (left - 1) * factor), max(0, (top - 1) * factor),
            min(img.width, (right + 1) * factor), min(img.height, (bottom + 1) * factor)), colour


def _dominant_colour(arr: np.ndarray, tolerance: int) -> np.ndarray:
    """The most common colour of ``arr`` (H x W x 3, 8 bits): the fullest of its 32-level
    bins, refined to the median of the pixels within ``tolerance`` of that bin's middle."""
    bins = (arr >> 3).astype(np.int32)
    counts = np.bincount(((bins[..., 0] * 32 + bins[..., 1]) * 32 + bins[..., 2]).ravel(),
                         minlength=1 << 15)
    top = int(counts.argmax())
    middle = np.array([(top >> 10) * 8 + 4, (top >> 5 & 31) * 8 + 4, (top & 31) * 8 + 4],
                      np.uint8)
    near = ~_differs(arr, middle, tolerance)
    return _median_colour(arr[near])


def _median_colour(pixels: np.ndarray) -> np.ndarray:
    """Each channel's median of ``pixels`` (... x 3, 8 bits), rounded, as
    ``np.median(..., axis=0).round()`` gives it, from each channel's counts: numpy's sort
    of every band of a page took a third of the time a photo's search spent looking for the
    product's photo (0.5 ms for a 130 x 170 band)."""
    flat = pixels.reshape(-1, 3)
    middle = ((len(flat) + 1) // 2, len(flat) // 2 + 1)  # the two middle ranks (one if odd)
    out = np.empty(3, np.uint8)
    for channel in range(3):
        below = np.bincount(flat[:, channel], minlength=256).cumsum()
        low, high = np.searchsorted(below, middle)
        out[channel] = np.round((int(low) + int(high)) / 2)
    return out


def product_box(arr: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Where the product photo of a page is in ``arr`` (H x W x 3, 8 bits): its box (left,
    top, right, bottom) and the colour to put around it; None when the picture has no frame.

    The page's colour is its most common one. Rows that are that colour, or all one colour
    (an app bar's or a photo's plain backdrop), within :data:`FRAME_TOLERANCE` and but for
    :data:`FRAME_NOISE` of their pixels, separate the page into bands of content: a status
    bar's clock, an app bar's title, the photo, the product's name and price, a button, a
    navigation bar's icons. The photo is the band with the most pixels off the page's
    colour among those that are neither a line of text (lower than :data:`BAND_MIN_HEIGHT`
    of the page's shorter side, or strokes over less than :data:`BAND_MIN_INK` of its box)
    nor a flat bar or button (low, and most of it one colour), nor a row of thumbnails
    (:data:`STRIP_BLOCKS`, unless its blocks are each larger than every other candidate),
    nor the page's top under a notification (as wide as the page, most of it the page's
    colour, within :data:`NOTIFICATION_TOP`); a band's side of text beside a wide gap is
    left out (a column of text beside the photo, :data:`MERGE_GAP`). Its box must leave
    :data:`MIN_FRAME` of the width and of the height to the page, or, on a page as tall as a
    phone's with other bands of content, of the height (a photo the whole width of the
    screen, its name, price and bars around it)."""
    height, width = arr.shape[:2]
    if min(height, width) < 32:
        return None
    ring = max(1, width // 100)
    colour = _dominant_colour(np.concatenate([arr[:, :ring], arr[:, -ring:]], axis=1),
                              FRAME_TOLERANCE)
    differs = _differs(arr, colour, FRAME_TOLERANCE)
    if differs.mean() > 1 - MIN_PAGE_SHARE:
        return None  # a photo of a scene, a pattern: no page around anything
    noise = max(2, FRAME_NOISE * width)
    rows = differs.sum(axis=1)
    plain, level = _plain_rows(arr, ring, FRAME_TOLERANCE, noise)
    blank = rows <= noise
    separator = blank | plain
    bands = _runs(~separator, 0)  # [start, end) of each run of content rows
    best, best_score, short = None, 0, min(height, width)
    strip_at, strip_box, strip_score, strip_block = 0, None, 0, 0
    boxes: list[tuple[int, int, int, int] | None] = []  # each band's, None for text or a bar
    for start, end in bands:
        content = _marked(differs[start:end], 0)
        if not content.any():
            continue  # (specks: a gap, which the merge below measures)
        boxes.append(None)
        found = _band_product(arr, differs, int(start), int(end), content)
        if found is None:
            continue  # text, a bar or a button
        box, score, block = found  # (block: a strip's largest block's score, else 0)
        if block:  # a row of thumbnails: the product only where no other candidate is as
            # large as one of its blocks (three alike, a kit), and never one of its parts
            if score > strip_score:
                strip_at, strip_box, strip_score, strip_block = len(boxes) - 1, box, score, block
            continue
        boxes[-1] = box
        if score > best_score:
            best, best_score = len(boxes) - 1, score
    # (a strip is the product, three alike or a kit, where nothing else is as large as one
    # of its blocks: a colour option's thumbnail under a kit was cut out instead, helper-239)
    if strip_box is not None and (best is None or best_score < strip_block):
        best, boxes[strip_at] = strip_at, strip_box
    if best is None:
        return None
    left, top, right, bottom = boxes[best]
    # the bands of one product a plain gap splits (a shiny strap's rows as light as the page,
    # a watch's face apart from its bracelet: half a watch was cut out, helper-232), the
    # neighbours not text nor a bar and no further than MERGE_GAP of the width
    for step in (-1, 1):
        at = best + step
        while 0 <= at < len(boxes) and boxes[at] is not None:
            b_left, b_top, b_right, b_bottom = boxes[at]
            if (top - b_bottom if step < 0 else b_top - bottom) > MERGE_GAP * short:
                break
            left, right = min(left, b_left), max(right, b_right)
            top, bottom = min(top, b_top), max(bottom, b_bottom)
            at += step
    # a photo as wide as the page: its backdrop's plain rows above and below the product
    # (rows of one colour, not the page's) are the photo's
    edge = level[top]
    while top > 0 and plain[top - 1] and not blank[top - 1] \
            and not _differs(level[top - 1:top, None], edge, FRAME_TOLERANCE)[0, 0]:
        top -= 1
    edge = level[bottom - 1]
    while bottom < height and plain[bottom] and not blank[bottom] \
            and not _differs(level[bottom:bottom + 1, None], edge, FRAME_TOLERANCE)[0, 0]:
        bottom += 1
    box_w, box_h = right - left, bottom - top
    if min(box_w, box_h) < 8 or (height - box_h) < MIN_FRAME * height:
        return None
    if (width - box_w) < MIN_FRAME * width:  # a photo the whole width: only on a phone's
        # page, with other bands of content, and not at its top or bottom edge (a photo's
        # own backdrop there is no page)
        tall = height >= PHONE_ASPECT * width and len(bands) > 1
        if not tall or top == 0 or bottom == height:
            return None
    return (left, top, right, bottom), colour


def _marked(part: np.ndarray, axis: int) -> np.ndarray:
    """Which columns (``axis`` 0) or rows (1) of ``part``, a piece of the page's ``differs``,
    hold content: more of their pixels off the page's colour than :data:`FRAME_NOISE` of
    their length, and at least two."""
    return part.sum(axis=axis) > max(1, FRAME_NOISE * part.shape[axis])


def _band_product(arr: np.ndarray, differs: np.ndarray, start: int, end: int,
                  content: np.ndarray) -> tuple[tuple[int, int, int, int], int, int] | None:
    """The box of what may be the product in the band of rows [start, end) whose columns
    ``content`` has (left, top, right, bottom), its score (its pixels off the page's colour)
    and, for a strip of thumbnails (:data:`STRIP_BLOCKS`), its largest block's score (else
    0); None for text, a bar or a button. Where a gap of columns of the page's colour wider
    than :data:`MERGE_GAP` parts it, the sides all text or bars (their rows taken apart
    again) are left out: the name, price and button in a column beside the photo."""
    short = min(differs.shape)
    pieces = _runs(content, MERGE_GAP * short)
    if len(pieces) > 1:
        kept = []
        for left, right in pieces:
            for top, bottom in _runs(_marked(differs[start:end, left:right], 1), 0):
                cols = np.flatnonzero(_marked(differs[start + top:start + bottom, left:right],
                                              0))
                if len(cols) and _may_be_product(arr, differs, start + top, start + bottom,
                                             left + int(cols[0]), left + int(cols[-1]) + 1,
                                             text_ink=1.0):
                    kept.append((left, right))
                    break
        if not kept:
            return None
        if len(kept) < len(pieces):  # (only a side of text dropped: one product's parts,
            # a pair of shoes, stay together as the whole band)
            left, right = kept[0][0], kept[-1][1]
            rows = np.flatnonzero(_marked(differs[start:end, left:right], 1))
            start, end = start + int(rows[0]), start + int(rows[-1]) + 1
            content = _marked(differs[start:end], 0)
            content[:left] = content[right:] = False
    cols = np.flatnonzero(content)
    left, right = int(cols[0]), int(cols[-1]) + 1
    if not _may_be_product(arr, differs, start, end, left, right):
        return None
    if right - left == differs.shape[1] and start < NOTIFICATION_TOP * differs.shape[0] \
            and differs[start:end].mean() < BAND_MIN_INK:
        return None  # the page's top under a notification: bars at its sides, its text
    # (lower down, a band so wide and light is a carousel's photo with its neighbours'
    # edges at the page's sides: helper-239)
    high, largest = 0, 0  # (a row of thumbnails or of other products when so many blocks
    # are high enough; its largest block's pixels off the page's colour)
    for a, b in _runs(content, 2):
        block = differs[start:end, a:b]
        rows = np.flatnonzero(block.any(axis=1))
        if b - a >= BAND_MIN_HEIGHT / 2 * short and rows[-1] - rows[0] + 1 >= (end - start) / 3:
            high += 1
            largest = max(largest, int(block.sum()))
    return (left, start, right, end), int(differs[start:end, left:right].sum()), \
        largest if high >= STRIP_BLOCKS else 0


def _may_be_product(arr: np.ndarray, differs: np.ndarray, top: int, bottom: int, left: int,
                right: int, text_ink: float = BAND_MIN_INK) -> bool:
    """False for a block of a page that is a line of text, a paragraph or an icon (lower than
    :data:`BAND_MIN_HEIGHT` of the page's shorter side, or crossed by many strokes and less
    than ``text_ink`` of it off the page's colour: a line of a column of text beside a photo
    is text at any ink, a price in large type is a third), or a bar or a button (low, most of
    it one colour, wide on the page or :data:`BUTTON_ASPECT` times as wide as high); True
    for one that may be the product's photo."""
    height, width = differs.shape
    short = min(height, width)
    box_h, box_w = bottom - top, right - left
    box = differs[top:bottom, left:right]
    ink = float(box.mean())
    strokes = np.count_nonzero(box[:, 1:] & ~box[:, :-1]) / box_h  # starts, a row
    if box_h < BAND_MIN_HEIGHT * short or (box_h < TEXT_HEIGHT * short and ink < text_ink
                                           and strokes >= TEXT_STROKES):
        return False  # a line of text, a paragraph, an icon
    if box_h < BAR_HEIGHT * short and ink > 0.9 and (box_w >= BAR_WIDTH * width
                                                     or box_w >= BUTTON_ASPECT * box_h):
        pixels = arr[top:bottom, left:right]
        if _differs(pixels, _median_colour(pixels), FRAME_TOLERANCE).mean() < 0.4:
            return False  # a bar or a button: a wide, low block, most of it one colour
    return True


def _runs(mask: np.ndarray, gap: float) -> list[tuple[int, int]]:
    """[start, end) of the runs of True in ``mask`` (1-D), runs parted by no more than ``gap``
    False joined."""
    at = np.flatnonzero(mask)
    if not len(at):
        return []
    cuts = np.flatnonzero(np.diff(at) - 1 > gap)
    starts = [int(at[0]), *(int(at[c + 1]) for c in cuts)]
    ends = [*(int(at[c]) + 1 for c in cuts), int(at[-1]) + 1]
    return list(zip(starts, ends, strict=True))


def _plain_rows(arr: np.ndarray, ring: int, tolerance: int,
                noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``arr`` are all the colour of their first ``ring`` pixels (a bar's, a
    photo's plain backdrop), within ``tolerance``, but for at most ``noise`` pixels; and that
    colour, a row (H x 3)."""
    ordered = np.sort(arr[:, :ring], axis=1)  # (each row's median: np.median's partition of
    # each row's few pixels cost more than a sort)
    level = np.round((ordered[:, (ring - 1) // 2].astype(np.uint16) + ordered[:, ring // 2])
                     / 2).astype(np.uint8)[:, None, :]
    return _differs(arr, level, tolerance).sum(axis=1) <= noise, level[:, 0]


def _differs(arr: np.ndarray, colour: np.ndarray, tolerance: int) -> np.ndarray:
    """Where a channel of the pixels of ``arr`` (H x W x 3, 8 bits) is more than ``tolerance``
    from ``colour``'s (one colour, or one a row: H x 1 x 3): channel by channel in 8 bits (the
    int16 differences' largest of three took 6 ms for a 300 x 600 copy, this 0.5 ms)."""
    out = np.zeros(arr.shape[:2], bool)
    for channel in range(3):
        values, level = arr[..., channel], colour[..., channel]
        out |= (np.maximum(values, level) - np.minimum(values, level)) > tolerance
    return out


QUERY_FRAME_SIDE = 4
"""The product cut out of a framed photo is at most this many times the model's input on a
side (a phone screenshot's 500-px product is cut out as it is)."""


def query_arrays(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """A photo searched for as the model's input batch: the photo as it is, and, when it has
    a wide uniform frame (:func:`framed_product`), the product cut out of it as a second row;
    a search keeps each product's better score of the two."""
    framed = framed_product(img, max_side=QUERY_FRAME_SIDE * prep.size)
    arrays = [to_array(img, prep)] if framed is None else [to_array(img, prep),
                                                           to_array(framed, prep)]
    return np.stack(arrays)
