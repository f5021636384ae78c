"""Structure and size limits checked before Pillow decodes a photo's pixels.

A file's own structure can make Pillow walk it in Python for seconds or hold gigabytes (a
JPEG's thousands of scans or fill bytes, a PNG's empty chunks, a GIF's sub-blocks, a TIFF's
millions of strips): :func:`_check_structure` and :func:`_check_jpeg` refuse such files with a
one-sentence :class:`ImageError`, reading only their bytes, and the ``MAX_*`` constants are
the limits :func:`vitrine.images.open_image` holds every photo to. The JPEG marker walk also
says which JPEGs browsers show (:func:`browser_jpeg`). Nothing here opens a file.
"""

from __future__ import annotations

import re
from typing import BinaryIO

import numpy as np
from PIL import Image

from vitrine.errors import ImageError

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
