"""Decoding and preprocessing: the only module that opens image files.

Every photo goes through :func:`open_image` (safe decode to upright RGB) and then
:func:`to_array` (resize policy + normalisation for the backbone).
:mod:`vitrine.image_checks` holds the limits checked before decoding,
:mod:`vitrine.image_colour` the colour handling after it, and :mod:`vitrine.image_frames`
the search for a product's photo in a page; none of them opens a file.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, get_args

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from vitrine.config import ResizePolicy
from vitrine.errors import ImageError
from vitrine.image_checks import (
    LOSSLESS_FRAMES,
    MAX_PHOTO_SIDE,
    MAX_RLE_BYTES,
    MAX_RLE_PIXELS,
    _check_jpeg,
    _check_structure,
    _signature_format,
    _too_many_pixels,
)
from vitrine.image_colour import (
    WHITE,
    _tiff_levels,
    browser_turn,
    in_srgb,
    to_rgb,
    turn_of,
    upright,
)
from vitrine.image_frames import framed_product
from vitrine.photo_hashes import read_whole, regular_file, unreadable_reason

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".avif", ".heic",
                              ".heif", ".gif", ".bmp", ".tif", ".tiff"})
BROWSER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp"})
"""Photos browsers show as they are; others (TIFF, HEIC, …) are sent as a JPEG copy
(thumbnail_jpeg)."""

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
            return read_whole(fh, st)  # (photo_hashes.PHOTO_MAX_BYTES, read as it is called)
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


TURN_MARKS = (b"Exif", b"EXIF", b"eXIf", b"Orientation")
"""Bytes one of which a photo that carries an orientation holds (an EXIF block's header, a
WebP's or PNG's EXIF chunk, an XMP orientation): a photo with none is shown as stored."""


def turned_as_browsers_show(fh: BinaryIO, limit: int) -> bool:
    """Whether browsers show the photo open in ``fh`` (read from its start) turned as
    :func:`open_image` turns it for its vector, card copy and duplicates: False for a WebP
    whose EXIF says to turn it, a photo turned by its XMP alone, a PNG by an eXIf after its
    picture (:func:`vitrine.image_colour.browser_turn`), which are sent as an upright copy
    instead. True for a photo over ``limit`` bytes or one Pillow cannot read (sent as it
    is, as before)."""
    data = fh.read(limit + 1)
    if len(data) > limit or not any(mark in data for mark in TURN_MARKS):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
            shown = browser_turn(img)
            return turn_of(img) == shown  # (a PNG's eXIf after its picture: read as it loads)
    except Exception:  # noqa: BLE001 - a file Pillow cannot read: the copy says why
        return True


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


QUERY_FRAME_SIDE = 4
"""The product cut out of a framed photo is at most this many times the model's input on a
side (a phone screenshot's 500-px product is cut out as it is)."""


MIN_QUERY_SIDE = MIN_SIDE
"""The shorter side, in pixels, a photo searched for must have (the smallest input a backbone
takes). Below it the photo holds too little of the product to be searched by: scaled down
to 16 px, demo photos almost never found their own product, yet every search answered with
scores near those of a whole photo (a 1 x 1 pixel found three products "60 %" alike, and a
trained model said "Looks like: bolsa (84 %)"), and nothing told the shopper."""


def query_arrays(img: Image.Image, prep: Preprocessing,
                 name: str = "uploaded image") -> np.ndarray:
    """A photo searched for as the model's input batch: the photo as it is, and, when it has
    a wide uniform frame (:func:`framed_product`), the product cut out of it as a second row;
    a search keeps each product's better score of the two. :class:`ImageError` (kind
    'small', naming ``name``) for a photo with a side under :data:`MIN_QUERY_SIDE`."""
    if min(img.size) < MIN_QUERY_SIDE:
        raise ImageError(name, f"{img.width}x{img.height} pixels: too small to search by (a "
                               f"side under {MIN_QUERY_SIDE} pixels; send a larger copy).",
                         kind="small")
    framed = framed_product(img, max_side=QUERY_FRAME_SIDE * prep.size)
    arrays = [to_array(img, prep)] if framed is None else [to_array(img, prep),
                                                           to_array(framed, prep)]
    return np.stack(arrays)
