"""Image decoding: awkward but valid files become upright RGB; broken files give one reason."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitrine.errors import ImageError
from vitrine.image_checks import jpeg_scans
from vitrine.image_frames import framed_product
from vitrine.images import (
    Preprocessing,
    is_image_path,
    open_image,
    query_arrays,
    resize_square,
    to_array,
)

RED = (220, 30, 30)


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), tmp_path / "c.jpg")
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    r, g, b = img.getpixel((20, 15))
    assert r > 200 and g < 60 and b < 60


def test_grayscale_and_16bit_png(tmp_path):
    gray = open_image(save(Image.new("L", (10, 10), 128), tmp_path / "g.png"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (128, 128, 128)
    arr = np.full((10, 10), 65535 // 2, dtype=np.uint16)
    path = tmp_path / "16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    img = open_image(path)
    assert img.mode == "RGB"
    assert abs(img.getpixel((5, 5))[0] - 127) <= 1  # scaled, not clipped to white


def test_deep_images_are_scaled_to_8_bits_without_whole_float_copies(tmp_path):
    """16- and 32-bit photos were scaled through float64 copies of the whole image: a
    258 kB 40-megapixel TIFF took 1.2 GB to read (an upload; a container's limit killed the
    server). The scaling goes a band of rows at a time, to the same pixels."""
    import tracemalloc

    rows = np.arange(1500, dtype=np.uint32)[:, None] * 40 + np.arange(1000, dtype=np.uint32)
    for mode, pixels, scale in (
            ("I;16", (rows % 65536).astype(np.uint16), 255 / 65535),
            ("I", rows.astype(np.int32), 255 / 65535),  # (over 255: read as 16 bits)
            ("F", (rows / rows.max()).astype(np.float32), 255.0)):  # (0–1: times 255)
        path = save(Image.fromarray(pixels), tmp_path / f"deep-{mode}.tif")
        tracemalloc.start()
        try:
            img = open_image(path)
            held = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        expect = np.clip(np.rint(pixels.astype(np.float64) * scale), 0, 255).astype(np.uint8)
        assert np.array_equal(np.asarray(img)[..., 0], expect), mode
        # whole float64 copies held 29–32 bytes a pixel; now the 8-bit copies and a band
        assert held < 16 * pixels.size, (mode, held / pixels.size)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    rgba.paste((*RED, 255), (0, 0, 10, 20))
    img = open_image(save(rgba, tmp_path / "t.png"))
    assert img.getpixel((15, 10)) == (255, 255, 255)
    assert img.getpixel((5, 10)) == RED
    la = Image.new("LA", (4, 4), (0, 0))
    assert open_image(save(la, tmp_path / "la.png")).getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 4, 8))
    path = save(pal, tmp_path / "p.png", transparency=0)
    img = open_image(path)
    assert img.getpixel((2, 2)) == RED and img.getpixel((6, 2)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    base = Image.new("RGB", (60, 20), (0, 0, 255))
    base.paste(RED, (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = save(base, tmp_path / "rot.jpg", exif=exif, quality=95)
    img = open_image(path)
    assert img.size == (20, 60)
    top = img.getpixel((10, 3))
    assert top[0] > 180 and top[2] < 80  # the red band is now on top


def test_animated_gif_first_frame_and_webp_bmp(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = open_image(path).getpixel((8, 8))
    assert r > 180 and b < 80
    for ext in ("webp", "bmp"):
        img = open_image(save(Image.new("RGB", (9, 7), RED), tmp_path / f"x.{ext}"))
        assert img.size == (9, 7) and img.mode == "RGB"


def test_upper_case_extensions_are_photos():
    assert is_image_path(Path("A.JPG")) and is_image_path(Path("b.JpEg"))
    assert is_image_path(Path("c.WEBP")) and not is_image_path(Path("d.txt"))


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"plain text, not an image", "not a recognised image"),
])
def test_broken_files_have_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        open_image(path)
    assert reason in str(info.value) and str(path) in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        open_image(path)


def test_files_pillow_chokes_on_have_a_reason_too(tmp_path):
    """One corrupt byte makes Pillow raise TypeError (TIFF) or struct.error (EXIF): still one
    ImageError with the file's name, never another exception; a broken entry in an EXIF
    block keeps the photo, turned as its orientation says (helper-157: it was left as
    stored, sideways)."""
    src = Image.effect_noise((64, 80), 40).convert("RGB")
    buf = io.BytesIO()
    src.save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    data[72] = 5  # a tag's type becomes RATIONAL: Pillow's TypeError when it decodes
    tiff = tmp_path / "nodims.tiff"
    tiff.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="cannot decode") as info:
        open_image(tiff)
    assert str(tiff) in str(info.value)

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    exif[0x010F] = "camera"
    buf = io.BytesIO()
    src.save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    data[41] = 10  # the 'Make' entry's tag: an ASCII value under a RATIONAL tag
    jpeg = tmp_path / "bad_exif.jpg"
    jpeg.write_bytes(bytes(data))
    assert open_image(jpeg).size == (80, 64)


def test_large_jpeg_is_checked_at_the_size_it_decodes(tmp_path):
    """A 64-MP JPEG decodes at 1/8 for a 224-px model: not refused under a 40-MP limit; a
    PNG of that size (no reduced decoding) is."""
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (9_600, 6_400), RED).save(path, quality=50)
    img = open_image(path, max_pixels=40_000_000, draft_size=224)
    assert min(img.size) >= 224 and img.size[0] * img.size[1] < 40_000_000
    with pytest.raises(ImageError, match="decompression bomb; .* VITRINE_MAX_IMAGE_PIXELS"):
        open_image(path, max_pixels=40_000_000)  # no draft: decoded whole


def test_a_multi_picture_jpeg_decodes_reduced_too(tmp_path):
    """Phones write JPEGs with a second picture (MPO: Ultra HDR, gain maps), which Pillow
    opens as MPO: a 48-MP one was decoded whole and refused under the 40-MP limit."""
    big = Image.new("RGB", (8_000, 6_000), RED)
    path = tmp_path / "phone.jpg"
    big.save(path, format="MPO", save_all=True, append_images=[big.resize((640, 480))],
             quality=50)
    assert Image.open(path).format == "MPO"
    img = open_image(path, max_pixels=40_000_000, draft_size=224)
    assert 224 <= min(img.size) <= 1_000 and img.getpixel((10, 10)) == pytest.approx(RED, abs=3)


ARITHMETIC_JPEG = Path(__file__).parent / "data" / "arithmetic.jpg"
"""640 x 480, 80 kB, arithmetic-coded (Pillow cannot write one); made with libjpeg-turbo's
cjpeg from a gradient with noise: ``python -c "import numpy as np; from PIL import Image;
y, x = np.mgrid[0:480, 0:640].astype(np.float32); a = np.dstack([255 * x / 640, 255 * y / 480,
128 + 100 * np.sin(x / 37) * np.cos(y / 23)]) + np.random.default_rng(0).normal(0, 10,
(480, 640, 3)); Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save('t.ppm')" &&
cjpeg -arithmetic -quality 90 t.ppm > tests/data/arithmetic.jpg``."""


def test_an_arithmetic_coded_jpeg_over_64_kb_decodes(tmp_path):
    """Pillow feeds libjpeg 64 kB at a time and libjpeg's arithmetic decoder cannot wait for
    more: every arithmetic-coded JPEG over 64 kB was refused ("broken data stream"). It
    decodes, whole and reduced, to the pixels of a decode given the whole file at once."""
    data = ARITHMETIC_JPEG.read_bytes()
    assert len(data) > 80_000 and b"\xff\xc9" in data[:1_000]  # (SOF9: arithmetic)

    def whole_file_decode(draft: int | None) -> np.ndarray:
        img = Image.open(io.BytesIO(data))
        if draft:
            img.draft("RGB", (draft, draft))
        img.decodermaxblock = len(data)
        return np.asarray(img.convert("RGB"))

    img = open_image(ARITHMETIC_JPEG)
    assert img.size == (640, 480)
    assert np.array_equal(np.asarray(img), whole_file_decode(None))
    reduced = open_image(data, draft_size=224)  # as indexing and search decode it
    assert reduced.size == (320, 240)
    assert np.array_equal(np.asarray(reduced), whole_file_decode(224))
    prep = Preprocessing()
    assert np.array_equal(to_array(reduced, prep),
                          to_array(Image.fromarray(whole_file_decode(224)), prep))


def test_a_lossless_jpeg_decodes_whole_where_a_reduced_decode_is_asked_for():
    """libjpeg cannot decode a lossless JPEG (96 x 64, a gradient; Pillow cannot write one:
    made with imagecodecs' ``jpeg8_encode(rgb, lossless=True)``) at a reduced scale: asked
    to, as indexing and search ask of a photo twice their input's side, it was refused
    ("broken data stream"). It decodes whole, to its exact pixels."""
    data = (Path(__file__).parent / "data" / "lossless.jpg").read_bytes()
    assert b"\xff\xc3" in data[:1_000]  # (SOF3: lossless)
    y, x = np.mgrid[0:64, 0:96]
    expect = np.dstack([x * 255 // 95, y * 255 // 63, np.full_like(x, 200)]).astype(np.uint8)
    assert np.array_equal(np.asarray(open_image(data)), expect)
    assert np.array_equal(np.asarray(open_image(data, draft_size=32)), expect)
    with pytest.raises(ImageError, match="96x64 pixels is over the limit of 5,000"):
        open_image(data, max_pixels=5_000, draft_size=32)  # (whole: the limit still holds)


@pytest.mark.parametrize("kind", ["EPS", "ICO", "TGA", "PCX"])
def test_only_photo_formats_are_decoded(tmp_path, kind, monkeypatch):
    """Pillow knows forty formats; its EPS reader runs Ghostscript on the file (an upload
    must never start a program): only the photo formats are decoded, whatever the name."""
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64), RED).save(path, format=kind)
    marker = tmp_path / "ghostscript-ran"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gs").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match="not a recognised image format"):
            open_image(source)
    assert not marker.exists()


def test_what_is_not_a_regular_file_is_refused_unread(tmp_path):
    """A link to /dev/zero was read forever (100 % CPU), and a named pipe waits for a writer:
    both are refused before they are opened."""
    import threading

    from vitrine.photo_hashes import file_sha256

    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink(tmp_path / "pipe.jpg", tmp_path / "link.jpg")
    errors: list = []

    def decode():  # a pipe, not the link to /dev/zero: reading that would fill the memory
        for name in ("pipe.jpg", "link.jpg"):
            try:
                open_image(tmp_path / name)
            except ImageError as exc:
                errors.append(str(exc))
            with pytest.raises(OSError, match="device, pipe or socket"):
                file_sha256(tmp_path / name)

    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "opening a pipe did not end"
    assert len(errors) == 2 and all("device, pipe or socket" in e for e in errors)
    with pytest.raises(OSError, match="device, pipe or socket"):
        file_sha256(tmp_path / "zero.jpg")  # hashed in chunks: no memory at stake


def test_a_tiff_with_many_pages_is_not_walked(tmp_path, monkeypatch):
    """Asking a TIFF how many pages it has walks them all: 90,000 empty pages in a 9 MB
    upload held the server for 50 s. The first page is decoded without asking."""
    from PIL import TiffImagePlugin

    pages = [Image.new("RGB", (32, 24), colour) for colour in (RED, (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "pages.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])

    def walked(self):
        raise AssertionError("every page of the TIFF was walked")

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "n_frames", property(walked))
    img = open_image(path)
    assert img.size == (32, 24) and img.getpixel((5, 5)) == RED


def _scan_per_colour(width: int, height: int) -> bytes:
    """A sequential (baseline) JPEG of flat grey that stores each colour in its own scan."""
    import struct

    def segment(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    parts = [b"\xff\xd8", segment(0xDB, b"\x00" + b"\x01" * 64),
             segment(0xC0, struct.pack(">BHHB", 8, height, width, 3)
                     + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))),
             segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00"
                     + b"\x10" + bytes([1] + [0] * 15) + b"\x00")]
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    coded = bytearray((blocks * 2 + 7) // 8)
    if len(coded) * 8 - blocks * 2:
        coded[-1] = (1 << (len(coded) * 8 - blocks * 2)) - 1
    for c in (1, 2, 3):
        parts += [segment(0xDA, bytes([1, c, 0x00, 0, 63, 0])), bytes(coded)]
    return b"".join([*parts, b"\xff\xd9"])


def test_jpegs_that_would_take_minutes_or_gigabytes_are_refused(tmp_path):
    """A progressive JPEG in thousands of scans (each a pass over the picture: 1 MB took
    38 s), and a progressive one above the pixel limit, which is held whole in memory
    whatever scale it is decoded at (2.4 GB for one 4.8 MB upload)."""
    buf = io.BytesIO()
    Image.effect_noise((96, 64), 40).convert("RGB").save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    sos = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    assert 2 < len(sos) <= 20 and open_image(data).size == (96, 64)  # a real progressive one
    repeated = data[:sos[1]] + data[sos[1]:sos[2]] * 200 + data[sos[2]:]
    with pytest.raises(ImageError, match="a JPEG in 2.. scans"):
        open_image(repeated)
    # what follows the picture (a phone's motion-photo video) or sits in its metadata is no
    # scan, however many FF DA byte pairs it holds
    trailer = (b"\xff\xda" + bytes(62)) * 500
    app = b"\xff\xe2" + (2 + len(trailer[:60_000])).to_bytes(2, "big") + trailer[:60_000]
    assert open_image(data + trailer).size == (96, 64)
    assert open_image(data[:2] + app + data[2:]).size == (96, 64)
    # a sequential JPEG with a scan per colour is held whole too
    assert jpeg_scans(_scan_per_colour(2_400, 1_600)) == 3
    with pytest.raises(ImageError, match="2400x1600 pixels is over the limit of 1,000,000 "
                                         "pixels .a JPEG in several scans"):
        open_image(_scan_per_colour(2_400, 1_600), max_pixels=1_000_000, draft_size=224)
    for progressive, refused in ((True, True), (False, False)):
        buf = io.BytesIO()
        Image.new("RGB", (2_400, 1_600), RED).save(buf, "JPEG", progressive=progressive)
        if refused:
            with pytest.raises(ImageError, match="2400x1600 pixels is over the limit"):
                open_image(buf.getvalue(), max_pixels=1_000_000, draft_size=224)
        else:  # a baseline one decodes at 1/4 (short side still 224 or more), in the limit
            assert open_image(buf.getvalue(), max_pixels=1_000_000, draft_size=224).size == (
                600, 400)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        open_image(tmp_path / "nope.png")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(ImageError, match="decompression bomb"):
        open_image(path, max_pixels=40_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000_000  # decoding 400 MP would need hundreds of MB


@pytest.mark.parametrize("policy", ["pad", "crop", "squash"])
def test_resize_policies_make_squares(policy):
    img = Image.new("RGB", (300, 100), RED)
    out = resize_square(img, 64, policy)
    assert out.size == (64, 64)
    corner = out.getpixel((32, 1))
    if policy == "pad":
        assert corner == (255, 255, 255)  # letterbox on white
    else:
        assert corner[0] > 200 and corner[1] < 60  # the photo fills the square


def test_to_array_normalises_chw():
    prep = Preprocessing(size=32)
    arr = to_array(Image.new("RGB", (50, 40), (255, 255, 255)), prep)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32
    expected = (1.0 - prep.mean[0]) / prep.std[0]
    assert np.allclose(arr[0], expected, atol=1e-5)


def test_heif_photos_from_phones_decode(tmp_path):
    """iPhones save HEIF (.HEIC); it decodes like any photo, upright and RGB, and the
    catalogue reads it."""
    from PIL import Image as PILImage
    from pillow_heif import from_pillow

    from vitrine.catalog import read_catalog

    img = PILImage.new("RGB", (64, 48), (200, 30, 30))
    path = tmp_path / "bolsas" / "IMG_0001.HEIC"
    path.parent.mkdir()
    from_pillow(img).save(path, quality=95)
    assert path.read_bytes()[4:12] in (b"ftypheic", b"ftypmif1")
    out = open_image(path)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert abs(int(np.asarray(out)[24, 32, 0]) - 200) < 12
    assert [p.product_id for p in read_catalog(tmp_path)] == ["bolsas/IMG_0001.HEIC"]


def test_an_avif_that_names_mif1_first_is_not_taken_for_heif():
    """AVIF files may name the generic 'mif1' brand first and 'avif' among the compatible
    ones: Pillow's AVIF decoder must get them (pillow-heif cannot decode AV1), whatever was
    opened before in the process."""
    from vitrine.images import container_kind
    from vitrine.service_uploads import image_suffix

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 10)).save(buf, format="AVIF")
    data = bytearray(buf.getvalue())
    size = int.from_bytes(data[:4], "big")
    compatible = [bytes(data[i:i + 4]) for i in range(16, size, 4)]
    assert b"avif" in compatible or data[8:12] == b"avif"
    data[8:12] = b"mif1"
    if b"avif" not in compatible:  # keep 'avif' among the compatible brands
        data[16:20] = b"avif"
    assert container_kind(bytes(data)) == "avif" and image_suffix(bytes(data)) == ".avif"
    assert open_image(bytes(data)).size == (32, 24)


def test_to_array_keeps_the_channels_in_rgb_order():
    """A red photo gives the backbone a high red channel and low green and blue, normalised
    by each channel's own mean and deviation (channels swapped to BGR would turn it blue)."""
    arr = to_array(Image.new("RGB", (40, 40), (255, 0, 0)), Preprocessing(size=32))
    # (1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225
    assert np.allclose(arr[:, 0, 0], [2.2489, -2.0357, -1.8044], atol=1e-4)


def test_32bit_integer_and_float_tiffs_with_8bit_values_keep_their_grey(tmp_path):
    """A 32-bit integer or float TIFF whose values are 0–255 (scientific or scanner
    exports) is read at that grey, not scaled down to black as 16-bit (or up to white as a
    0–1 float)."""
    path = save(Image.new("I", (6, 6), 200), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    assert open_image(path).getpixel((3, 3)) == (200, 200, 200)
    path = save(Image.new("F", (6, 6), 200.0), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    assert open_image(path).getpixel((3, 3)) == (200, 200, 200)
    path = save(Image.new("F", (6, 6), 0.5), tmp_path / "half.tif")
    assert open_image(path).getpixel((3, 3)) == (128, 128, 128)  # 0–1 floats scaled up


def png_with_key(path: Path, depth: int, colour: int, rows: np.ndarray, key: bytes) -> Path:
    """A PNG of ``rows`` (big-endian samples) with a colour-key tRNS chunk, written by hand:
    Pillow writes neither 16-bit colour nor a 16-bit grey key."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    h, w = rows.shape[:2]
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
                     + chunk(b"tRNS", key) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def test_a_colour_keyed_png_is_white_where_it_is_transparent(tmp_path):
    """An RGB PNG whose tRNS chunk names its transparent colour (optipng and oxipng write a
    cut-out photo whose alpha is all or nothing so), in 8 or 16 bits, and a 16-bit grey PNG
    with a transparent level: embedded with that colour, black, where the same picture as
    an RGBA PNG is white (the two scored 0.85)."""
    rgb = np.full((4, 4, 3), 90, np.uint8)
    rgb[0, 0] = 0
    keyed = save(Image.fromarray(rgb, "RGB"), tmp_path / "rgb.png", transparency=(0, 0, 0))
    wide = png_with_key(tmp_path / "rgb16.png", 16, 2, rgb.astype(">u2") * 257,
                        bytes(6))
    grey = png_with_key(tmp_path / "grey16.png", 16, 0, rgb[..., 0].astype(">u2") * 257,
                        bytes(2))
    assert [Image.open(p).mode for p in (keyed, wide, grey)] == ["RGB", "RGB", "I;16"]
    for path in (keyed, wide, grey):
        opened = open_image(path)
        assert opened.getpixel((0, 0)) == (255, 255, 255), path.name
        assert opened.getpixel((3, 3)) == (90, 90, 90), path.name
    for key in (1, 200):  # a 16-bit key is 16 bits, whatever its value (a key of 200 is a
        # 16-bit near-black, which was taken for the 8-bit grey 200)
        deep = np.full((4, 4, 3), 90 * 257, ">u2")
        deep[0, 0], deep[3, 3] = key, 200 * 257
        wide = png_with_key(tmp_path / f"rgb16-{key}.png", 16, 2, deep,
                            key.to_bytes(2, "big") * 3)
        assert open_image(wide).getpixel((0, 0)) == (255, 255, 255), key
        assert open_image(wide).getpixel((3, 3)) == (200, 200, 200), key


def test_a_grey_png_with_a_transparent_level_is_white_there(tmp_path):
    """A greyscale PNG that marks one grey level transparent shows white where it is, as
    other transparent photos do, not that grey (black here)."""
    img = Image.new("L", (4, 4), 0)
    img.putpixel((3, 3), 90)
    path = save(img, tmp_path / "l.png", transparency=0)
    opened = open_image(path)
    assert opened.getpixel((0, 0)) == (255, 255, 255)
    assert opened.getpixel((3, 3)) == (90, 90, 90)


def test_a_damaged_heic_is_one_line(tmp_path):
    """libheif's error ends in a line break, which the sentence kept: the CLI printed ")."
    on a line of its own, and the API's detail and index's skip reason held it."""
    from pillow_heif import from_pillow

    whole = tmp_path / "whole.heic"
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    from_pillow(Image.fromarray(noise, "RGB")).save(whole, quality=95)  # (its data past half)
    path = tmp_path / "cut.heic"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageError) as raised:
        open_image(path)
    said = str(raised.value)
    assert "cannot decode the image" in said and "\n" not in said and said.endswith(").")


def test_a_thin_banner_has_a_card_copy_within_the_pixel_limit(tmp_path):
    """A JPEG far wider than tall (a banner) searched fine, decoded at a reduced scale for
    the model, but its card copy kept the short side at the card's size: decoded at full
    scale, over the pixel limit, it was a 404 (and `--plot` failed). The copy decodes at the
    scale its long side needs."""
    from vitrine.images import thumbnail

    rows = np.linspace(0, 255, 8000, dtype=np.uint8)[None, :, None].repeat(300, 0).repeat(3, 2)
    path = save(Image.fromarray(rows, "RGB"), tmp_path / "banner.jpg", quality=90)
    card = thumbnail(path, 448, max_pixels=1_000_000)  # (8000 × 300: 2.4 MP)
    assert card.size == (448, 17)
    assert abs(card.getpixel((224, 8))[0] - 128) < 8  # the banner's middle, scaled down
    photo = save(Image.new("RGB", (4032, 3024), RED), tmp_path / "p.jpg")
    assert thumbnail(photo, 448, 40_000_000).size == (448, 336)
    # a phone photo's copy is made from the decode it was before (not one half as sharp)
    assert open_image(photo, draft_size=448, fit=True).size == (1008, 756)


def test_a_file_far_larger_than_any_photo_is_not_read(tmp_path):
    """A 12 GB file named .jpg (a zip of it is 12 MB) was hashed whole, then read whole, and
    ended the whole `vitrine index` in a MemoryError. It is one photo that cannot be read."""
    from vitrine.photo_hashes import PHOTO_MAX_BYTES, file_sha256

    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:  # (sparse: no disk taken)
        fh.truncate(PHOTO_MAX_BYTES + 2**20)
    with pytest.raises(ImageError, match=r"huge\.jpg: cannot be read \(513 MB, larger than "
                                         r"the 512 MB a photo file may be\)"):
        open_image(huge)
    with pytest.raises(OSError, match="a photo file may be"):
        file_sha256(huge)


def test_a_jpeg_header_of_fill_bytes_or_a_picture_with_a_huge_side_is_refused_at_once():
    """helper-153: 10 MB of fill bytes (or of empty comments) in a JPEG's header cost 5 s of
    a server's CPU an upload, read one by one; a 1 x 39,000,000 PNG of 76 KB, under the
    pixel limit, took 3 GB. Both are refused before their pixels, in milliseconds; a JPEG
    with a few dozen segments and a 65,535-pixel side still open."""
    from vitrine.image_checks import MAX_HEADER_STEPS, MAX_PHOTO_SIDE

    small = io.BytesIO()
    Image.new("RGB", (64, 64)).save(small, "JPEG")
    jpeg = small.getvalue()
    comments = b"".join(b"\xff\xfe\x00\x02" for _ in range(MAX_HEADER_STEPS))
    app0 = jpeg.index(b"\xff\xe0")  # (a segment, then bytes Pillow steps over one by one)
    after_app0 = app0 + 2 + int.from_bytes(jpeg[app0 + 2:app0 + 4], "big")
    for padded in (jpeg[:2] + b"\xff" * 9_900_000 + jpeg[2:], jpeg[:2] + comments + jpeg[2:],
                   jpeg[:2] + b"\xff\x00" * 4_950_000 + jpeg[2:],
                   jpeg[:after_app0] + b"\x00" * 9_900_000 + jpeg[after_app0:],
                   # markers without a length, which Pillow steps past (helper-156)
                   jpeg[:2] + b"\xff\xd9" + b"\xff" * 9_900_000 + jpeg[2:],
                   *(jpeg[:2] + (marker + b"\xff" * 65_535) * 151 + jpeg[2:]
                     for marker in (b"\xff\xd8", b"\xff\xc8", b"\xff\xf0"))):
        with pytest.raises(ImageError, match="segments or fill bytes"):
            open_image(padded)  # (it opened, after seconds)
    assert open_image(jpeg[:2] + comments[:4 * 40] + jpeg[2:]).size == (64, 64)
    import zlib

    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, "PNG")
    ihdr_end = 8 + 25  # (signature, then the 25-byte IHDR chunk)
    empty = b"\x00\x00\x00\x00prVt" + zlib.crc32(b"prVt").to_bytes(4, "big")  # (no data)
    stuffed = png.getvalue()[:ihdr_end] + empty * 830_000 + png.getvalue()[ihdr_end:]
    with pytest.raises(ImageError, match="PNG with over 1,000 chunks"):
        open_image(stuffed)  # (it opened, after 2 s)
    assert open_image(png.getvalue()[:ihdr_end] + empty * 40 + png.getvalue()[ihdr_end:]
                      ).size == (64, 64)
    for size in ((1, MAX_PHOTO_SIDE + 1), (MAX_PHOTO_SIDE + 1, 1)):
        tall = io.BytesIO()
        Image.new("L", size).save(tall, "PNG")
        with pytest.raises(ImageError, match=f"side longer than {MAX_PHOTO_SIDE:,} pixels"):
            open_image(tall.getvalue())
    edge = io.BytesIO()
    Image.new("L", (1, MAX_PHOTO_SIDE)).save(edge, "PNG")
    assert open_image(edge.getvalue()).size == (1, MAX_PHOTO_SIDE)


@pytest.mark.parametrize("size", [16, 1025, 60_000, 2.5])
def test_a_model_input_side_out_of_range_is_refused(size):
    """A damaged model.json's input side: 32 to 1024 pixels. (The photo's side limit, once
    named like it, widened it to 65,535: tens of GB an input; helper-156.)"""
    from vitrine.images import Preprocessing

    with pytest.raises(ValueError, match="from 32 to 1024"):
        Preprocessing(size=size)


def _tiff(entries: list[tuple[int, int, bytes, int]], pixels: bytes, order: str = "<") -> bytes:
    """A TIFF (little-endian, or ``order`` ">"): its pixels at offset 8, then one IFD of
    ``entries`` (tag, type, value bytes in that order, count; values over 4 bytes after the
    IFD)."""
    import struct

    entries = sorted(entries)
    ifd = 8 + len(pixels) + len(pixels) % 2
    extra_at = ifd + 2 + 12 * len(entries) + 4
    table, extra = b"", b""
    for tag, kind, value, count in entries:
        if len(value) <= 4:
            table += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            table += struct.pack(order + "HHII", tag, kind, count, extra_at + len(extra))
            extra += value + b"\0" * (len(value) % 2)
    return ((b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", ifd) + pixels
            + b"\0" * (len(pixels) % 2) + struct.pack(order + "H", len(entries)) + table
            + b"\0\0\0\0" + extra)


def _grey_tiff(rows: np.ndarray, photometric: int = 1, sample_format: int = 1,
               strips: int = 1, order: str = "<") -> bytes:
    """A grey TIFF of ``rows`` (8 or 16 bits), cut into ``strips`` strip fields (the extra
    ones all point at the first row: what a hostile file says costs Pillow the same)."""
    import struct

    height, width = rows.shape
    bits = rows.dtype.itemsize * 8
    short = lambda v: struct.pack(order + "H", v)  # noqa: E731
    row_bytes = width * rows.dtype.itemsize
    per_strip = max(1, height // strips) if strips <= height else 1
    offsets = [8 + min(i * per_strip, height - 1) * row_bytes for i in range(strips)]
    sizes = [per_strip * row_bytes] * strips
    entries = [(256, 3, short(width), 1), (257, 3, short(height), 1), (258, 3, short(bits), 1),
               (259, 3, short(1), 1), (262, 3, short(photometric), 1), (277, 3, short(1), 1),
               (278, 3, short(per_strip), 1), (339, 3, short(sample_format), 1),
               (273, 4, struct.pack(f"{order}{strips}I", *offsets), strips),
               (279, 4, struct.pack(f"{order}{strips}I", *sizes), strips)]
    return _tiff(entries, rows.astype(rows.dtype.newbyteorder(order)).tobytes(), order)


def test_files_pillow_would_walk_for_seconds_are_refused_at_once():
    """helper-157: a 9.8 MB TIFF of 4.9 million strips took 17 s and 1.4 GB to open, 10 MB of
    empty GIF comments 1 s (one comment of 4.5 million sub-blocks 460 MB), a PNG's chunks
    after its picture (or 800,000 empty picture chunks) 1 to 2 s, a 3.5 kB run-length BMP 4.5
    s. Each is refused before Pillow walks it; the same formats cut as photos are still
    open."""
    from vitrine.image_checks import MAX_HEADER_STEPS, MAX_SMALL_BLOCKS, MAX_TIFF_PIECES

    rows = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    assert np.array_equal(np.asarray(open_image(_grey_tiff(rows, strips=64)).convert("L")),
                          rows)
    for prefix in (b"II*\0", b"II\0*", b"MM\0*", b"MM*\0", b"MM\0+"):  # (all Pillow opens;
        # the last, not 43 in its third byte, as a classic TIFF)
        order = "<" if prefix[:2] == b"II" else ">"
        assert np.array_equal(np.asarray(open_image(prefix + _grey_tiff(rows, strips=64,
                                                                        order=order)[4:])
                                         .convert("L")), rows)
        with pytest.raises(ImageError, match=f"{MAX_TIFF_PIECES + 1:,} strips or tiles"):
            open_image(prefix + _grey_tiff(rows, strips=MAX_TIFF_PIECES + 1, order=order)[4:])
    # a table of fields far longer than a photo's (helper-161: a BigTIFF's 480,000 took 4.5
    # s), in the first page's table or in its EXIF one
    import struct

    fields = MAX_HEADER_STEPS + 1
    big = (b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", fields)
           + struct.pack("<HHQQ", 65000, 3, 1, 1) * fields)
    with pytest.raises(ImageError, match=f"a table of {fields:,} fields"):
        open_image(big)
    with_exif = _tiff([(256, 3, b"\x40\0", 1), (257, 3, b"\x40\0", 1), (258, 3, b"\x08\0", 1),
                       (262, 3, b"\x01\0", 1), (273, 4, struct.pack("<I", 8), 1),
                       (279, 4, struct.pack("<I", 64 * 64), 1), (34665, 4, b"", 1)],
                      rows.tobytes())
    exif_at = len(with_exif)  # (its EXIF table after the rest)
    with_exif = with_exif.replace(struct.pack("<HHI", 34665, 4, 1) + b"\0" * 4,
                                  struct.pack("<HHII", 34665, 4, 1, exif_at))
    tags = struct.pack("<H", fields) + struct.pack("<HHI", 700, 3, 1) + b"\0" * 4
    tags += (struct.pack("<HHI", 65000, 3, 1) + b"\0" * 4) * (fields - 1)
    assert open_image(with_exif + struct.pack("<H", 1) + tags[2:14]).size == (64, 64)
    with pytest.raises(ImageError, match=f"a table of {fields:,} fields"):
        open_image(with_exif + tags)

    import zlib

    def chunk(kind: bytes, data: bytes = b"") -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    png = io.BytesIO()
    Image.fromarray(rows).save(png, "PNG")
    head, picture = png.getvalue()[:33], png.getvalue()[33:-12]  # (signature + IHDR; IEND)
    text = chunk(b"tEXt", b"k\0v")
    assert open_image(head + picture + text * 40 + chunk(b"IEND")).size == (64, 64)
    with pytest.raises(ImageError, match=f"over {MAX_HEADER_STEPS:,} chunks besides"):
        open_image(head + picture + text * (MAX_HEADER_STEPS + 1) + chunk(b"IEND"))
    # after an animation's control chunk that Pillow ignores (no frames, too many, or two of
    # them), it reads on past the next frame's (helper-161)
    frame = chunk(b"fcTL", bytes(26))
    # an animation of one frame whose picture, before any frame's control, is a frame of
    # its own: Pillow stops at the next frame's control, and so does the count (helper-168)
    one = chunk(b"acTL", (1).to_bytes(4, "big") + bytes(4))
    assert open_image(head + one + picture + frame + chunk(b"fdAT", bytes(8)) * 1_100
                      + chunk(b"IEND")).size == (64, 64)
    for ignored in (chunk(b"acTL", bytes(8)), chunk(b"acTL", (2**31 + 1).to_bytes(4, "big")
                                                    + bytes(4)),
                    chunk(b"acTL", (5).to_bytes(4, "big") + bytes(4)) * 2):
        with pytest.raises(ImageError, match=f"over {MAX_HEADER_STEPS:,} chunks besides"):
            open_image(head + ignored + picture + frame + text * (MAX_HEADER_STEPS + 1)
                       + chunk(b"IEND"))
    animation = io.BytesIO()  # (a real one: 700 frames, 1,400 chunks after the first)
    Image.fromarray(rows).save(animation, "PNG", save_all=True, append_images=[
        Image.fromarray(np.roll(rows, i, axis=1)) for i in range(1, 700)])
    assert open_image(animation.getvalue()).size == (64, 64)
    empty_pictures = chunk(b"IDAT") * (MAX_SMALL_BLOCKS + 1_000)
    with pytest.raises(ImageError, match="cut into over .* chunks, most of them almost empty"):
        open_image(head + picture + empty_pictures + chunk(b"IEND"))
    # a picture written a chunk a row (1,500 of them), as some encoders do, opens
    tall = np.random.default_rng(0).integers(0, 256, (1_500, 64), dtype=np.uint8)
    packer = zlib.compressobj()
    pieces = b"".join(chunk(b"IDAT", packer.compress(b"\0" + r.tobytes())
                                     + packer.flush(zlib.Z_SYNC_FLUSH)) for r in tall)
    png = io.BytesIO()
    Image.fromarray(tall).save(png, "PNG")
    ending = chunk(b"IDAT", packer.flush()) + chunk(b"IEND")
    assert np.array_equal(np.asarray(open_image(png.getvalue()[:33] + pieces + ending)
                                     .convert("L")), tall)

    gif = io.BytesIO()
    Image.fromarray(rows).save(gif, "GIF")
    screen = 13 + 3 * 256  # (header, screen, a 256-colour palette)
    comment = b"\x21\xfe\x01x\x00"
    assert open_image(gif.getvalue()[:screen] + comment * 100 + gif.getvalue()[screen:]
                      ).size == (64, 64)
    for stuffed in (comment * (MAX_SMALL_BLOCKS + 1),  # (a step the block, one the sub-block)
                    b"\x21\xfe" + b"\x01x" * (2 * MAX_SMALL_BLOCKS) + b"\x00",
                    b"?" * (2 * MAX_SMALL_BLOCKS)):  # stray bytes, stepped over one by one
        with pytest.raises(ImageError, match="GIF with over .* blocks or stray bytes"):
            open_image(gif.getvalue()[:screen] + stuffed + gif.getvalue()[screen:])
    # an XMP packet of megabytes (Photoshop's grow so), read as sub-blocks of 72 bytes or so:
    # over 20,000 of them, and open (helper-168)
    xmp = b"\x21\xff\x0bXMP DataXMP" + (b"\x48" + b"x" * 72) * 30_000 + b"\x00"
    assert open_image(gif.getvalue()[:screen] + xmp + gif.getvalue()[screen:]).size == (64, 64)


def _rle_bmp(width: int, height: int, rle: bytes) -> bytes:
    """An 8-bit run-length compressed BMP (grey palette)."""
    import struct

    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    start = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", start + len(rle), 0, 0, start) + info + palette
            + rle)


def test_a_large_run_length_bmp_is_refused_and_a_small_one_decodes():
    from vitrine.image_checks import MAX_RLE_BYTES, MAX_RLE_PIXELS

    row = b"\x40\x07" + b"\x00\x00"  # 64 pixels of level 7, end of the row
    assert np.asarray(open_image(_rle_bmp(64, 32, row * 32 + b"\x00\x01")).convert("L")
                      ).tolist() == [[7] * 64] * 32
    # a pixel, then an end of row that Pillow pads a pixel at a time: 3.5 kB, 4.5 s
    eol = b"\x01\x07\x00\x00"
    with pytest.raises(ImageError, match="run-length compressed BMP of 65535x600 pixels"):
        open_image(_rle_bmp(65535, 600, eol * 600 + b"\x00\x01"))
    side = int(MAX_RLE_PIXELS ** 0.5)
    with pytest.raises(ImageError, match=f"over {MAX_RLE_PIXELS:,} pixels"):
        open_image(_rle_bmp(side + 1, side, eol * side + b"\x00\x01"))
    no_ops = b"\x00\x02\x00\x00" * (MAX_RLE_BYTES // 4)  # (moves by nothing: a step each)
    with pytest.raises(ImageError, match=f"or {MAX_RLE_BYTES:,} bytes"):
        open_image(_rle_bmp(64, 32, no_ops + row * 32 + b"\x00\x01"))


def test_a_photo_turns_upright_though_its_exif_holds_a_field_pillow_cannot_write():
    """helper-157: Pillow's exif_transpose turns the photo, then writes the EXIF block
    again; a field typed as some cameras do (a resolution unit as a byte) failed that
    writing, and the photo was embedded sideways (0.57 against its upright twin)."""
    import struct

    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:, :10] = RED  # a red band on the left, upright
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # on its side
    entries = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x0128, 1, 1, b"\x02\0\0\0")]
    exif = (b"Exif\0\0II*\0" + struct.pack("<IH", 8, len(entries))
            + b"".join(struct.pack("<HHI", *e[:3]) + e[3] for e in entries) + b"\0\0\0\0")
    for kind, options in (("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        stored.save(buf, kind, exif=exif, **options)
        img = open_image(buf.getvalue())
        assert img.size == (60, 40), kind
        assert img.getpixel((4, 20))[0] > 180 and img.getpixel((50, 20))[0] < 60, kind


def test_16_bit_grey_tiffs_keep_their_levels():
    """helper-157: a 16-bit white-is-zero TIFF was embedded (and shown) as its negative, a
    signed one at half its brightness."""
    levels = np.linspace(0, 255, 64).round().astype(np.uint8)[None, :].repeat(8, 0)
    white_is_zero = _grey_tiff((255 - levels).astype(np.uint16) * 257, photometric=0)
    signed = _grey_tiff(levels.astype(np.int16) * 128, sample_format=2)
    for data in (white_is_zero, signed):
        grey = np.asarray(open_image(data).convert("L")).astype(int)
        assert np.abs(grey - levels).max() <= 1


def test_a_tiff_or_webp_cut_off_says_what_it_is(tmp_path):
    """A TIFF whose header (at its end, as libtiff writes them) is cut off was 'not a
    recognised image format', a WebP cut off 'could not create decoder object'. (Pillow says
    the same of a TIFF or JPEG it does not decode: not called damaged, helper-161.)"""
    photo = Image.effect_noise((64, 48), 40).convert("RGB")
    for kind, options, said, told in (
            ("TIFF", {"compression": "tiff_lzw"}, "a TIFF file whose header cannot be read "
             r"\(damaged, cut off, or a kind of it that is not supported\)", "format"),
            ("WEBP", {}, "damaged or truncated", "damaged")):
        buf = io.BytesIO()
        photo.save(buf, kind, **options)
        with pytest.raises(ImageError, match=said) as raised:
            open_image(buf.getvalue()[:len(buf.getvalue()) // 2])
        assert raised.value.kind == told
    # a few bytes after a JPEG's start were "a header of over 1,000 segments" (helper-161)
    for start in (b"\xff\xd8hello", b"\xff\xd8" + bytes(5)):
        with pytest.raises(ImageError, match="a JPEG file whose header cannot be read"):
            open_image(start)


def test_a_tiff_in_small_tiles_as_large_photos_need_opens():
    """helper-168: a 12-megapixel photo in 16 x 16 tiles (47,000 of them; ImageMagick, vips
    and libtiff write such) was refused as over 32,768 pieces; Pillow reads it in 0.3 s. As
    many as the picture's size needs are taken; more are refused."""
    import struct

    from vitrine.image_checks import MOST_TIFF_PIECES

    side = 3000  # (35,344 tiles of 16 x 16, the last of each row and column cut: helper-169)
    tiles = -(-side // 16)
    photo = np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)
    padded = np.zeros((tiles * 16, tiles * 16), np.uint8)
    padded[:side, :side] = photo
    pixels = padded.reshape(tiles, 16, tiles, 16).transpose(0, 2, 1, 3).tobytes()
    n = tiles * tiles
    short = lambda v: struct.pack("<H", v)  # noqa: E731

    def tiled(count: int, width: int = side, height: int = side, planes: int = 1) -> bytes:
        offsets = [8 + (i % n) * 256 for i in range(count)]
        return _tiff([(256, 3, short(width), 1), (257, 3, short(height), 1),
                      (258, 3, short(8), 1), (259, 3, short(1), 1), (262, 3, short(1), 1),
                      (277, 3, short(planes), 1), (284, 3, short(2 if planes > 1 else 1), 1),
                      (322, 3, short(16), 1), (323, 3, short(16), 1),
                      (324, 4, struct.pack(f"<{count}I", *offsets), count),
                      (325, 4, struct.pack(f"<{count}I", *[256] * count), count)], pixels)

    opened = open_image(tiled(n))
    assert opened.size == (side, side)
    assert np.array_equal(np.asarray(opened.convert("L")), photo)
    with pytest.raises(ImageError, match=f"cut into {n + 1:,} strips or tiles, over {n:,}"):
        open_image(tiled(n + 1))
    # whatever its size says, at most MOST_TIFF_PIECES (a 4.5 MB file of 562,500 tiles that
    # a 6000 x 6000 picture in four planes may have took 4.3 s, helper-169), said as such
    with pytest.raises(ImageError, match=f"over {MOST_TIFF_PIECES:,} \\(the most taken: save "
                                         "it in larger tiles or strips"):
        open_image(tiled(MOST_TIFF_PIECES + 1, 6000, 6000, planes=4))
    # a tall, narrow picture written a row a strip (as `tiffcp -r 1` and scanners do) needs
    # a strip a row: 40,000 of them (helper-170)
    narrow = np.random.default_rng(1).integers(0, 256, (40_000, 20), dtype=np.uint8)
    assert np.array_equal(np.asarray(open_image(_grey_tiff(narrow, strips=40_000))
                                     .convert("L")), narrow)
    # a size over the pixel limit is said as such (not as too many tiles)
    with pytest.raises(ImageError, match="7000x7000 pixels is over the limit"):
        open_image(tiled(MOST_TIFF_PIECES + 1, 7000, 7000))


def _shoe(width: int = 300, height: int = 160, seed: int = 0) -> Image.Image:
    """A product photo that fills its picture: a striped shoe-like block on grey (another
    ``seed``, another one)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _page(colour, photo: Image.Image, size=(1170, 2532), at=None) -> Image.Image:
    page = Image.new("RGB", size, colour)
    page.paste(photo, at or ((size[0] - photo.width) // 2, size[1] // 3))
    return page


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0), (128, 128, 128)])
def test_a_photo_in_a_wide_frame_is_cut_out_on_a_square_of_its_colour(colour):
    """A phone screenshot: the product photo (500 px wide, a wide shoe) in the middle of a tall
    page; cut out, centred on a square of the page's colour, whole (the centre crop of the
    square keeps all of it) with a small margin."""
    shoe = _shoe(500, 260)
    found = framed_product(_page(colour, shoe))
    assert found is not None
    side = found.width
    assert found.height == side and 500 <= side <= 500 * 1.2
    arr = np.asarray(found)
    assert tuple(arr[0, 0]) == tuple(arr[-1, -1]) == colour
    rows, cols = np.nonzero((arr != colour).any(axis=2))
    top, left = rows.min(), cols.min()
    assert (rows.max() - top, cols.max() - left) == (259, 499)
    assert np.array_equal(arr[top:top + 260, left:left + 500], np.asarray(shoe))  # not scaled
    assert abs((side - 500) / 2 - left) <= 4 and abs((side - 260) / 2 - top) <= 4  # centred
    batch = query_arrays(_page(colour, shoe), Preprocessing())
    assert batch.shape == (2, 3, 224, 224)


def test_a_large_framed_photo_is_cut_out_no_larger_than_the_query_needs(monkeypatch):
    """A 10-megapixel picture 16 times as wide as high, framed: its product was pasted whole on
    a square 1.1 times its width (500 megapixels for a 40-megapixel PNG: 2 GB and 5 s an
    upload, helper-229); it is scaled as it is cut out, to the side asked for."""
    import vitrine.images
    from vitrine.images import QUERY_FRAME_SIDE

    shoe = _shoe(8_000, 400)
    page = _page((255, 255, 255), shoe, size=(12_800, 800), at=(2_400, 200))
    found = framed_product(page, max_side=896)
    assert found is not None and found.size == (896, 896)
    arr = np.asarray(found)
    rows, cols = np.nonzero((arr != 255).any(axis=2))
    assert 896 / 1.12 <= cols.max() - cols.min() + 1 <= 896 / 1.08  # the product, scaled
    asked = []
    monkeypatch.setattr(vitrine.images, "framed_product",
                        lambda img, **kw: asked.append(kw) or framed_product(img, **kw))
    assert query_arrays(page, Preprocessing()).shape == (2, 3, 224, 224)
    assert asked == [{"max_side": QUERY_FRAME_SIDE * 224}]


def test_a_noisy_jpeg_screenshot_is_still_framed():
    """Re-encoded as a JPEG (artefacts around the photo, the page's levels off by a few) and
    decoded at a reduced scale as an upload is: the frame is found, and the box is the
    photo's within a few pixels."""
    shoe = _shoe(560, 300)
    page = _page((255, 255, 255), shoe, at=(305, 900))
    rng = np.random.default_rng(1)
    noisy = np.asarray(page).astype(np.int16) + rng.integers(-6, 7, (2532, 1170, 3))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=70)
    for img in (open_image(buf.getvalue()), open_image(buf.getvalue(), draft_size=224)):
        found = framed_product(img)
        assert found is not None
        scale = img.width / 1170
        assert 560 * scale * 0.97 <= found.width / 1.1 <= 560 * scale * 1.05


def test_photos_without_a_wide_frame_are_left_alone():
    """A photo that fills its picture, one on a narrow border (10 % a side pair), a blank
    page, and a photo whose edges are a scene (a gradient, not one colour): None, and the
    query is the photo alone."""
    shoe = _shoe(1000, 700)
    assert framed_product(shoe) is None
    narrow = _page((255, 255, 255), shoe, size=(1100, 770), at=(50, 35))
    assert framed_product(narrow) is None
    # a product photo on white with a quarter of its width white (as a fifth of the demo's
    # are): no second pass of the model, which changed none of their results
    on_white = _page((255, 255, 255), _shoe(880, 400), size=(1170, 2532))
    assert framed_product(on_white) is None
    assert framed_product(_page((255, 255, 255), _shoe(760, 400), size=(1170, 2532)))
    assert framed_product(Image.new("RGB", (1170, 2532), (255, 255, 255))) is None
    ramp = np.linspace(0, 255, 1170, dtype=np.uint8)[None, :, None].repeat(2532, 0).repeat(3, 2)
    scene = Image.fromarray(ramp)
    scene.paste(_shoe(500, 260), (335, 900))
    assert framed_product(scene) is None
    blotches = np.random.default_rng(2).integers(0, 256, (2532 // 32, 1170 // 30 + 1, 3),
                                                 dtype=np.uint8)
    textured = Image.fromarray(np.kron(blotches, np.ones((32, 30, 1), np.uint8))[:, :1170])
    textured.paste(_shoe(500, 260), (335, 900))  # a photo on a patterned backdrop
    assert framed_product(textured) is None
    assert query_arrays(shoe, Preprocessing()).shape == (1, 3, 224, 224)


def _app_page(photo: Image.Image, dark: bool, top: int = 400) -> Image.Image:
    """A shopping app's page (1170 x 2532) with ``photo`` ``top`` px down, centred: status
    bar, app bar, name, price, button and navigation bar drawn around it."""
    from conftest import app_chrome

    page = Image.new("RGB", (1170, 2532), (18, 18, 18) if dark else (255, 255, 255))
    page.paste(photo, ((1170 - photo.width) // 2, top))
    app_chrome(page, dark, below=top + photo.height)
    return page


def _on_white(product: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A catalogue photo: ``product`` in the middle of a white picture of ``size``."""
    photo = Image.new("RGB", size, (255, 255, 255))
    photo.paste(product, ((size[0] - product.width) // 2, (size[1] - product.height) // 2))
    return photo


def _content_size(found: Image.Image, colour: tuple) -> tuple[int, int]:
    """The width and height of what is not ``colour`` in a cut-out square."""
    rows, cols = np.nonzero((np.asarray(found) != colour).any(axis=2))
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_a_photo_in_an_app_page_is_cut_out_from_its_bars_text_and_button(dark, fmt):
    """A real screenshot is no plain page: a coloured status bar and app bar at the top, the
    product's name, price in large type and a coloured button below the photo, a navigation
    bar at the bottom. The page's edges were not one colour, so no frame was found and the
    page was searched whole; the photo is found among them, its box within a few pixels
    (in light mode the product itself on the white page, in dark mode the photo's white
    backdrop), not the text or the button under it."""
    shoe = _shoe(500, 260)
    photo = _on_white(shoe, (560, 420)) if dark else shoe
    page = _app_page(photo, dark)
    if fmt == "JPEG":
        buf = io.BytesIO()
        page.save(buf, "JPEG", quality=85)
        page = open_image(buf.getvalue())
    found = framed_product(page)
    assert found is not None
    colour = (18, 18, 18) if dark else (255, 255, 255)
    if fmt == "PNG":
        assert _content_size(found, colour) == photo.size
        assert 1.08 <= found.width / max(photo.size) <= 1.15  # (+ a reduced pixel a side)
    else:  # (the page's levels off by a few)
        assert abs(found.width / 1.1 - max(photo.size)) <= 16
    assert query_arrays(page, Preprocessing()).shape == (2, 3, 224, 224)


def test_a_photo_the_whole_width_of_an_app_page_is_cut_out():
    """A photo as wide as the screen (no frame left and right) between an app's bars and
    text, on a page as tall as a phone's: its band is cut out (the centre crop of the tall
    page took the photo's lower part and the name under it); the same picture no taller
    than a catalogue photo leaves nothing out."""
    photo = _on_white(_shoe(900, 500), (1170, 900))
    found = framed_product(_app_page(photo, dark=True))
    assert found is not None
    assert _content_size(found, (18, 18, 18)) == (1170, 900)
    short = Image.new("RGB", (1170, 1400), (18, 18, 18))
    short.paste(photo, (0, 100))
    assert framed_product(short) is None


def test_photos_with_text_but_no_frame_are_left_alone():
    """A catalogue photo that fills its picture, with a caption under it, or a product on
    white a quarter of whose width is left: None (one embedding, as before the app pages)."""
    from PIL import ImageDraw, ImageFont

    photo = _on_white(_shoe(880, 600), (1000, 1000))
    ImageDraw.Draw(photo).text((60, 880), "Brown Casual Shoes", fill=(33, 33, 33),
                               font=ImageFont.load_default(size=60))
    assert framed_product(photo) is None
    assert framed_product(_on_white(_shoe(800, 500), (1000, 1000))) is None


def test_a_product_split_by_a_light_gap_is_cut_out_whole_and_one_at_the_edge_too():
    """A watch whose bracelet's rows are as light as the page between its parts was cut in
    half (the band with most ink alone: helper-232); a photo at the page's top edge (a
    screenshot cropped under the status bar) was never cut out."""
    top, bottom = _shoe(400, 220), _shoe(400, 260)
    watch = Image.new("RGB", (400, 220 + 40 + 260), (255, 255, 255))  # 40 light rows across
    watch.paste(top, (0, 0))
    watch.paste(bottom, (0, 260))
    found = framed_product(_page((255, 255, 255), watch))
    assert found is not None
    rows = np.nonzero((np.asarray(found) != 255).any(axis=2))[0]
    assert rows.max() - rows.min() + 1 >= 520 - 8  # both parts, not the larger alone
    at_top = Image.new("RGB", (600, 1000), (255, 255, 255))
    at_top.paste(_shoe(300, 300), (150, 0))
    assert framed_product(at_top) is not None


def test_page_colours_are_the_medians_numpy_gives():
    """The colour of a band and of each row's edge, counted per channel instead of sorted
    (faster), is numpy's median rounded: odd and even counts, ties, all one value, each
    width of row edge."""
    from vitrine.image_frames import _median_colour, _plain_rows

    rng = np.random.default_rng(7)
    for count in (1, 2, 3, 4, 5, 64, 65, 1000):
        for pixels in (rng.integers(0, 256, (count, 3), dtype=np.uint8),
                       rng.integers(100, 103, (count, 3), dtype=np.uint8),
                       np.full((count, 3), 9, np.uint8)):
            want = np.median(pixels, axis=0).round().astype(np.uint8)
            assert _median_colour(pixels).tolist() == want.tolist(), (count, pixels[:4])
    for ring in range(1, 9):
        arr = rng.integers(0, 256, (40, ring + 3, 3), dtype=np.uint8)
        want = np.median(arr[:, :ring], axis=1).round().astype(np.uint8)
        assert _plain_rows(arr, ring, 10, 2)[1].tolist() == want.tolist(), ring


def _found_box(page: Image.Image) -> tuple[int, int, int, int] | None:
    """The product's box :func:`product_box` finds in ``page``, in the page's pixels (within
    a reduced pixel or two: framed_box's, as the search cuts it out)."""
    from vitrine.image_frames import framed_box

    found = framed_box(page)
    return None if found is None else found[0]


def _near(box, want, slack: int = 12) -> bool:
    return box is not None and all(abs(a - b) <= slack for a, b in zip(box, want, strict=True))


def test_a_row_of_thumbnails_or_other_products_under_the_photo_is_not_the_product():
    """A gallery's strip of thumbnails 30 px under the photo was taken for a part of the
    product (the box the photo and the strip); a row of four other products ("recommended
    for you") under a photo with less ink than they have together was cut out instead of
    it. Three alike alone on a page are still cut out (a set of three)."""
    from PIL import ImageDraw

    page = Image.new("RGB", (1170, 2532), (255, 255, 255))
    page.paste(_shoe(600, 500), (285, 400))
    draw = ImageDraw.Draw(page)
    for i in range(5):  # (products on white in a thin frame, the first one's dark)
        page.paste(_on_white(_shoe(100, 70), (150, 150)), (60 + 170 * i, 930))
        draw.rectangle((60 + 170 * i, 930, 209 + 170 * i, 1079), width=2 + 2 * (i == 0),
                       outline=(33, 33, 33) if i == 0 else (200, 200, 200))
    strip = page.copy()
    assert _near(_found_box(page), (285, 400, 885, 900))
    page = Image.new("RGB", (1170, 2532), (255, 255, 255))
    page.paste(_on_white(_shoe(300, 160), (400, 400)), (385, 400))
    for i in range(4):
        page.paste(_on_white(_shoe(170, 150), (240, 240)), (60 + 270 * i, 1500))
    assert _near(_found_box(page), (435, 520, 735, 680))
    alone = Image.new("RGB", (1170, 2532), (255, 255, 255))
    for i in range(3):
        alone.paste(_shoe(200, 200), (150 + 300 * i, 900))
    assert _near(_found_box(alone), (150, 900, 950, 1100))
    assert framed_product(strip) is not None


def test_a_photo_with_its_name_price_and_button_beside_it_is_cut_out_alone():
    """A tablet's or a landscape page: the photo on the left, the product's name, its price
    in large type, a paragraph and an "Add to cart" button in a column beside it. The rows
    of the photo and of the text beside it were one band, cut out whole (the price and the
    paragraph with the product), or the button, a third of the width, won."""
    from PIL import ImageDraw, ImageFont

    page = Image.new("RGB", (2532, 1170), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 2532, 300), fill=(33, 150, 243))
    page.paste(_on_white(_shoe(420, 260), (560, 560)), (80, 340))
    y = 340
    for size, line in ((60, "Rockport Men Slip On"), (60, "Brown Casual Shoes"),
                       (110, "R$ 349,90"), (40, "Material: couro legitimo, solado de"),
                       (40, "borracha antiderrapante, palmilha macia"),
                       (40, "Entrega em ate 5 dias uteis.")):
        draw.text((720, y), line, fill=(33, 33, 33), font=ImageFont.load_default(size=size))
        y += size + 30
    draw.rounded_rectangle((720, y + 20, 1520, y + 150), radius=30, fill=(233, 30, 99))
    assert _near(_found_box(page), (150, 490, 570, 750))


def test_a_notification_over_the_app_bars_is_not_the_product():
    """A screenshot taken with a notification showing: its light banner over the coloured
    status and app bars made them one band, as wide as the page and mostly of the page's
    colour, with more ink than a small product's photo, and no product was cut out."""
    from PIL import ImageDraw, ImageFont

    page = Image.new("RGB", (1170, 2532), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, 1170, 300), fill=(255, 87, 34))
    draw.rounded_rectangle((24, 20, 1146, 230), radius=38, fill=(242, 242, 247))
    draw.rounded_rectangle((54, 65, 174, 185), radius=26, fill=(37, 211, 102))
    draw.text((204, 60), "WhatsApp", fill=(20, 20, 20), font=ImageFont.load_default(size=44))
    draw.text((204, 130), "Maria: olha esse, gostei muito!", fill=(40, 40, 40),
              font=ImageFont.load_default(size=42))
    page.paste(_shoe(240, 140), (465, 700))
    assert _near(_found_box(page), (465, 700, 705, 840))


def test_a_kit_of_three_beside_a_small_thumbnail_is_still_the_product():
    """Three photos side by side (a kit, a multipack) are a strip by their blocks; with a
    colour option's small thumbnail under them the thumbnail was cut out instead (a strip was
    the product only where nothing else was a candidate: helper-239). A strip whose blocks
    are each larger than every other candidate is the product."""
    page = Image.new("RGB", (1170, 2532), (255, 255, 255))
    for i in range(3):  # 300 px each, 45 px apart
        page.paste(_shoe(300, 300, seed=i), (90 + 345 * i, 400))
    page.paste(_shoe(110, 110, seed=3), (60, 800))
    assert _near(_found_box(page), (90, 400, 1080, 700))


def test_a_carousels_neighbours_at_the_page_edges_leave_the_photo_found():
    """A carousel shows the next and previous photos' edges at the page's sides: a band as
    wide as the page, mostly of the page's colour, was dropped as a notification wherever it
    was, and no product was cut out (helper-239). Only at the page's top is it one."""
    from PIL import ImageDraw

    page = Image.new("RGB", (1170, 2532), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 400, 89, 1299), fill=(180, 180, 180))  # the previous photo's edge
    draw.rectangle((1080, 400, 1169, 1299), fill=(180, 180, 180))  # the next one's
    page.paste(_shoe(400, 300), (385, 700))
    draw.rectangle((0, 0, 1169, 300), fill=(233, 30, 99))  # the app bar
    draw.text((60, 1400), "Rockport Men Slip On", fill=(33, 33, 33))
    box = _found_box(page)
    assert box is not None and box[1] <= 700 and box[3] >= 1000  # the photo in it
    assert framed_product(page) is not None


def _drawn_watch(side: int) -> Image.Image:
    """A product photo with fine detail (a watch's face, its strap's stitching) on white."""
    from PIL import ImageDraw

    img = Image.new("RGB", (side, side), (255, 255, 255))
    draw, s = ImageDraw.Draw(img), side / 100
    draw.ellipse((20 * s, 15 * s, 80 * s, 75 * s), fill=(40, 40, 60), outline=(200, 170, 60),
                 width=max(1, round(3 * s)))
    for i in range(12):
        a = i / 12 * 2 * np.pi
        draw.line((50 * s + 20 * s * np.cos(a), 45 * s + 20 * s * np.sin(a),
                   50 * s + 26 * s * np.cos(a), 45 * s + 26 * s * np.sin(a)),
                  fill=(230, 230, 230), width=max(1, round(s / 2)))
    draw.rectangle((42 * s, 75 * s, 58 * s, 98 * s), fill=(120, 70, 30))
    for k in range(50):
        draw.line((42 * s, (75 + k / 2) * s, 58 * s, (75 + k / 2) * s), fill=(90, 50, 20))
    return img


@pytest.mark.parametrize("side", [448, 896])
def test_a_large_jpeg_is_the_models_input_it_is_decoded_whole(side):
    """A JPEG whose short side is 2 or 4 times the model's input was decoded by libjpeg
    straight to the input's side (draft at 224), sharper than the resize makes any other
    photo: its vector was at a cosine of 0.975 of the same photo decoded whole (0.9996 at
    447 px). Indexing, upload search and training decode it to the input it has decoded
    whole, within resampling."""
    from vitrine.embed import decode, decode_query
    from vitrine.train_data import views_of

    buf = io.BytesIO()
    _drawn_watch(side).save(buf, "JPEG", quality=95)
    prep = Preprocessing()
    whole = to_array(open_image(buf.getvalue()), prep)
    indexed = decode(buf.getvalue(), prep, 40_000_000)[0]
    searched = decode_query(buf.getvalue(), prep, 40_000_000)[0]
    assert np.array_equal(indexed, searched)
    assert np.abs(indexed - whole).mean() < 0.005
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"vitrine-watch-{os.getpid()}-{side}.jpg"
    path.write_bytes(buf.getvalue())
    try:
        trained = views_of(path, [0], prep, [0], 40_000_000).arrays[0]
    finally:
        path.unlink()
    assert np.array_equal(trained, indexed)


def test_a_panorama_decodes_for_the_model_at_the_scale_its_input_needs_within_the_limit():
    """Where twice the input's side would decode a JPEG over the pixel limit (a panorama
    12 times as wide as high, its short side under 4 times the input's), it decodes at the
    scale the input's side needs, as it did: not refused."""
    from vitrine.embed import decode

    buf = io.BytesIO()
    Image.new("RGB", (6_000, 500), RED).save(buf, "JPEG", quality=50)
    array = decode(buf.getvalue(), Preprocessing(), 2_000_000)[0]
    assert array.shape == (3, 224, 224)


def _linear_rgb_profile() -> bytes:
    """An ICC v2 display profile of sRGB's primaries with a linear tone curve (a linear-light
    export): its mid-grey 128 is sRGB's 188."""
    import struct

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + struct.pack(">3i", *(round(v * 65536) for v in (x, y, z)))

    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", 7) + b"linear\0" + bytes(78)),
            (b"cprt", b"text\0\0\0\0none\0\0\0\0"), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)), (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141))]
    tags += [(name, b"curv\0\0\0\0" + struct.pack(">I", 0)) for name in (b"rTRC", b"gTRC",
                                                                        b"bTRC")]
    return _icc_profile(tags, b"RGB ")


def _icc_profile(tags: list[tuple[bytes, bytes]], space: bytes) -> bytes:
    """An ICC v2 display profile of colour space ``space`` (b"RGB ", b"GRAY") holding
    ``tags`` (name, data), its white D50."""
    import struct

    table, body, at = b"", b"", 128 + 4 + 12 * len(tags)
    for name, data in tags:
        data += bytes(-len(data) % 4)
        table += name + struct.pack(">II", at + len(body), len(data))
        body += data
    header = (struct.pack(">I", at + len(body)) + b"lcms\x02\x10\0\0mntr" + space + b"XYZ "
              + bytes(12) + b"acsp" + bytes(28) + struct.pack(">3i", 63190, 65536, 54061)
              + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_photo_is_read_in_srgb_from_the_colour_space_its_profile_names(tmp_path, mode):
    """A photo's ICC profile (a camera's Adobe RGB, a phone's Display P3) was ignored: its
    pixels were embedded as if sRGB (an Adobe RGB photo at a cosine down to 0.978 of its sRGB
    copy) and its card copy, which carries no profile, was shown dull. Its pixels are read in
    sRGB, as browsers show them; a photo with a profile that cannot be read is read as it
    is."""
    from vitrine.images import thumbnail_jpeg

    profile = _linear_rgb_profile()
    photo = Image.new(mode, (600, 400), (128, 128, 128, 255)[:len(mode)])
    photo.save(path := tmp_path / "linear.png", icc_profile=profile)
    assert open_image(path).getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=2)
    card = Image.open(io.BytesIO(thumbnail_jpeg(path, 200, 40_000_000)))
    assert card.getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=3)
    photo.save(broken := tmp_path / "broken.png", icc_profile=b"not a profile" * 20)
    assert open_image(broken).getpixel((10, 10)) == (128, 128, 128)


def test_a_palette_photo_is_read_in_srgb_from_its_profile_too(tmp_path):
    """A palette PNG (a photo quantised to 256 colours, as PNG optimisers write it) keeps its
    ICC profile as an RGB one does, and a browser applies it alike: it was left as it is, so
    the same photo read 128 where its RGB copy read 188 (in_srgb took RGB and CMYK alone)."""
    profile = _linear_rgb_profile()
    photo = Image.new("RGB", (600, 400), (128, 128, 128))
    photo.putpixel((0, 0), (0, 0, 255))
    palette = photo.quantize(4)
    palette.save(path := tmp_path / "palette.png", icc_profile=profile)
    assert Image.open(path).mode == "P"
    assert open_image(path).getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=2)
    keyed = tmp_path / "keyed.png"  # (its colour key still shows white)
    palette.save(keyed, icc_profile=profile, transparency=palette.getpixel((0, 0)))
    assert open_image(keyed).getpixel((0, 0)) == (255, 255, 255)
    assert open_image(keyed).getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=2)


def _grey_profile(gamma: float) -> bytes:
    """An ICC v2 grey display profile whose tone curve is ``gamma`` (1.0: a linear-light
    export, its mid-grey 128 sRGB's 188; 1.8: a Mac's Gray Gamma 1.8, 128 is sRGB's 146)."""
    import struct

    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", 5) + b"grey\0" + bytes(78)),
            (b"cprt", b"text\0\0\0\0none\0\0\0\0"),
            (b"wtpt", b"XYZ \0\0\0\0" + struct.pack(">3i", 63190, 65536, 54061)),
            (b"kTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)))]
    return _icc_profile(tags, b"GRAY")


@pytest.mark.parametrize("kind", ["L.png", "L.jpg", "L.tif", "LA.png", "I;16.png", "I;16.tif",
                                  "white-is-zero I;16.tif"])
def test_a_grey_photo_is_read_in_srgb_from_its_grey_profile(tmp_path, kind):
    """A grey photo's ICC profile (Photoshop's Gray Gamma or Dot Gain working spaces, a
    linear export) was ignored, 8- or 16-bit, with alpha or not (in_srgb took RGB, CMYK and
    palette photos alone): its vector lay at a cosine of 0.992 to 0.996 of the same picture
    saved in sRGB, and its card copy read 128 where Chromium shows the photo itself at 188.
    Its greys are read in sRGB, as browsers show them."""
    from PIL import TiffImagePlugin

    from vitrine.images import thumbnail_jpeg

    mode, suffix = kind.split()[-1].rsplit(".", 1)
    grey = np.full((400, 600), 128, np.uint8)
    opaque = Image.new("L", (600, 400), 255)
    photo = {"L": Image.fromarray(grey), "LA": Image.merge("LA", [Image.fromarray(grey), opaque]),
             "I;16": Image.fromarray(grey.astype(np.uint16) * 257)}[mode]
    extra = {}
    if kind.startswith("white-is-zero"):  # (its levels inverted: _tiff_levels)
        photo = Image.fromarray(65535 - np.asarray(photo))
        extra["tiffinfo"] = TiffImagePlugin.ImageFileDirectory_v2()
        extra["tiffinfo"][262] = 0
    path = tmp_path / f"grey.{suffix}"
    photo.save(path, icc_profile=_grey_profile(1.0), **extra)
    assert Image.open(path).mode == mode
    assert open_image(path).getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=2)
    card = Image.open(io.BytesIO(thumbnail_jpeg(path, 200, 40_000_000)))
    assert card.getpixel((10, 10)) == pytest.approx((188, 188, 188), abs=3)
    photo.save(path, icc_profile=_grey_profile(1.8), **extra)
    assert open_image(path).getpixel((10, 10)) == pytest.approx((146, 146, 146), abs=2)


def test_a_grey_photos_alpha_stays_when_its_profile_is_applied():
    """Half-transparent grey with a profile lies on white as a browser shows it (the profile's
    188 half over white: 221), not its alpha lost to littleCMS (LA's transform drops it)."""
    buf = io.BytesIO()
    Image.new("LA", (60, 40), (128, 128)).save(buf, "PNG", icc_profile=_grey_profile(1.0))
    assert open_image(buf.getvalue()).getpixel((10, 10)) == pytest.approx((221, 221, 221), abs=2)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_photo_with_a_colour_key_is_read_in_srgb_from_its_profile_too(tmp_path, mode):
    """A PNG with a colour key (tRNS: an optimiser's cut-out whose alpha is all or nothing) and
    an ICC profile was left as it is (in_srgb skipped keyed photos): 128 where Chromium shows
    188. Its colours are read in sRGB, its key's pixels still white."""
    profile = _linear_rgb_profile() if mode == "RGB" else _grey_profile(1.0)
    photo = Image.new(mode, (60, 40), (128, 128, 128)[:len(mode)] if mode == "RGB" else 128)
    key = (0, 0, 255) if mode == "RGB" else 0
    photo.paste(key, (0, 0, 5, 5))
    photo.save(path := tmp_path / "keyed.png", icc_profile=profile, transparency=key)
    img = open_image(path)
    assert img.getpixel((2, 2)) == (255, 255, 255)
    assert img.getpixel((30, 20)) == pytest.approx((188, 188, 188), abs=2)


@pytest.mark.parametrize(("gamma", "srgb", "expected"), [
    (55556, False, 146),  # an old Mac's 1/1.8
    (100000, False, 188),  # linear light
    (45455, False, 128),  # sRGB's 1/2.2, as encoders write it
    (55556, True, 128),  # an sRGB chunk beside it: sRGB
])
def test_a_png_is_read_with_the_gamma_its_gama_chunk_names(tmp_path, gamma, srgb, expected):
    """A PNG without a profile whose gAMA chunk names another gamma than sRGB's was read as
    sRGB: Chromium shows a gamma-1.8 PNG's 128 as 146 and a linear one's as 188, and the
    vector of the same picture saved so lay at a cosine of 0.991 to 0.995 of its sRGB one."""
    import struct

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", gamma))
    if srgb:
        info.add(b"sRGB", b"\0")
    for mode in ("RGB", "L", "RGBA"):
        photo = Image.new(mode, (60, 40), (128, 128, 128, 255)[:len(mode)] if mode != "L"
                          else 128)
        photo.save(path := tmp_path / f"gamma_{mode}.png", pnginfo=info)
        assert open_image(path).getpixel((10, 10)) == pytest.approx((expected,) * 3, abs=1)


@pytest.mark.parametrize("kind", ["RGB keyed", "L keyed", "I;16", "I;16 keyed"])
def test_a_keyed_or_16_bit_grey_png_is_read_with_its_gama_too(tmp_path, kind):
    """gAMA was applied to RGB, RGBA, L, LA and palette PNGs but not to one with a colour key
    (tRNS: what an optimiser makes of an RGBA cut-out whose alpha is all or nothing) nor to
    16-bit grey: the same picture losslessly re-encoded read 128 where its original read
    146 (its vector at a cosine of 0.993 of the original's). Its key's pixels stay white."""
    import struct

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 55556))  # an old Mac's 1/1.8
    mode, keyed = kind.split()[0], kind.endswith("keyed")
    if mode == "I;16":
        photo = Image.fromarray(np.full((40, 60), 128 * 257, np.uint16))
        key = 0
    else:
        photo = Image.new(mode, (60, 40), (128, 128, 128) if mode == "RGB" else 128)
        key = (0, 0, 255) if mode == "RGB" else 0
    photo.paste(key, (0, 0, 5, 5))
    photo.save(path := tmp_path / "gamma.png", pnginfo=info,
               **({"transparency": key} if keyed else {}))
    assert Image.open(path).mode == mode
    img = open_image(path)
    assert img.getpixel((30, 20)) == pytest.approx((146, 146, 146), abs=1)
    assert img.getpixel((2, 2)) == ((255, 255, 255) if keyed else (0, 0, 0))


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("JPEG", {}),
                                          ("JPEG", {"progressive": True}), ("TIFF", {})])
def test_a_photo_of_exactly_the_pixel_limit_is_decoded(fmt, options):
    """The limit is the most pixels a photo may have ("over the limit" is refused): a photo
    of exactly ``max_pixels`` decodes, one row more is refused, whatever the format."""
    def photo(height: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (50, height), RED).save(buf, fmt, **options)
        return buf.getvalue()

    assert open_image(photo(40), max_pixels=2_000).size == (50, 40)
    with pytest.raises(ImageError, match="over the limit of 2,000"):
        open_image(photo(41), max_pixels=2_000)


def test_a_photo_too_small_to_search_by_is_refused_not_searched(tmp_path):
    """A 16 x 16 photo (or a 1 x 1 pixel) was searched: 40 demo photos scaled to 16 px found
    their own product first once in 40 (40 of 40 whole), a 1-pixel PNG three products "60 %"
    alike, with no word that the photo was too small. A photo searched for is refused with
    that reason (the API's 400, the page's sentence); the same photo in a catalogue is
    still indexed, as before."""
    from vitrine.embed import decode, decode_query

    prep = Preprocessing()
    for size in ((16, 16), (1, 1), (400, 20)):
        buf = io.BytesIO()
        Image.new("RGB", size, RED).save(buf, "PNG")
        with pytest.raises(ImageError) as refused:
            decode_query(buf.getvalue(), prep, 40_000_000)
        assert refused.value.kind == "small"
        assert refused.value.reason == (f"{size[0]}x{size[1]} pixels: too small to search by "
                                        "(a side under 32 pixels; send a larger copy).")
        assert decode(buf.getvalue(), prep, 40_000_000)[0].shape == (3, 224, 224)
    path = save(Image.new("RGB", (16, 16), RED), tmp_path / "tiny.png")
    with pytest.raises(ImageError, match=r"tiny\.png: 16x16 pixels: too small"):
        decode_query(path, prep, 40_000_000)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), RED).save(buf, "PNG")
    assert decode_query(buf.getvalue(), prep, 40_000_000).shape == (1, 3, 224, 224)
