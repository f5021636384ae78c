"""Colour handling of a decoded photo: upright, in sRGB, as 8-bit RGB.

After :func:`vitrine.images.open_image` has decoded a photo, its pixels are turned as its EXIF
orientation says (:func:`upright`), read from the colour space its ICC profile or a PNG's gAMA
chunk names into sRGB (:func:`in_srgb`), and converted from any Pillow mode (16-bit, float,
palette, colour keys and alpha composited on white) to 8-bit RGB (:func:`to_rgb`), as browsers
show the photo and as the model was trained on. Nothing here opens a file.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from vitrine.image_checks import MAX_HEADER_STEPS, _tiff_table

WHITE = (255, 255, 255)


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
    turn = turn_of(img)
    return img.transpose(turn) if turn is not None else img


def turn_of(img: Image.Image) -> Image.Transpose | None:
    """The turn :func:`upright` gives the photo (its EXIF orientation, or its XMP one where
    the EXIF has none, as Pillow reads them); None for none."""
    if _exif_fields(img) > MAX_HEADER_STEPS:
        return None
    try:
        return ORIENTATIONS.get(img.getexif().get(0x0112))
    except Exception:  # noqa: BLE001 - a broken EXIF block: Pillow raises many kinds
        return None


def browser_turn(img: Image.Image) -> Image.Transpose | None:
    """The turn a browser gives the photo ``img`` (opened, not loaded): a JPEG's or PNG's
    EXIF orientation read before its picture (the APP1 segment, an eXIf chunk before
    IDAT); not a WebP's EXIF (a chunk after its picture), an XMP orientation, nor an eXIf
    after a PNG's picture (CSS Images 3: metadata after the image data is ignored; Chromium
    shows all three as stored)."""
    if img.format not in ("JPEG", "MPO", "PNG") or not img.info.get("exif") \
            or _exif_fields(img) > MAX_HEADER_STEPS:
        return None
    try:
        exif = Image.Exif()
        exif.load(img.info["exif"])
        return ORIENTATIONS.get(exif.get(0x0112))
    except Exception:  # noqa: BLE001 - a broken EXIF block: browsers show it as stored
        return None


def _exif_fields(img: Image.Image) -> int:
    """How many fields the first table of the photo's EXIF block holds (a PNG's eXIf chunk or
    its "Raw profile type exif" text, a WebP's, AVIF's or HEIC's EXIF, a JPEG's APP1), read
    without unpacking them; 0 for none or one that cannot be read. Pillow walks them one by
    one, in Python: a 1-pixel PNG of 786 kB with 65,535 of them held the interpreter 0.2 s
    an upload (a TIFF's own tables are bounded by :func:`vitrine.image_checks._check_structure`)."""
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
