"""What a shared cache, a log reader and a cheap upload could get out of `vitrine serve`
(helper-262)."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(settings, small_store, embedder) -> TestClient:
    from vitrine.api import create_app

    return TestClient(create_app(settings, small_store, embedder=embedder))


def _varies(response, field: str) -> bool:
    said = ",".join(response.headers.get_list("vary")).lower()
    return field.lower() in {part.strip() for part in said.split(",")}


def test_answers_that_depend_on_a_request_header_say_so_in_vary(client, small_catalog):
    """An error is a page for a browser and JSON otherwise, and a product page's way back
    comes from the Referer: without Vary a shared cache in front (a 404 and a 405 are
    cacheable) served one client's answer to the next, or an attacker's back link to every
    shopper."""
    page = client.get("/products/no-such-product", headers={"Accept": "text/html"})
    data = client.get("/products/no-such-product")
    assert page.status_code == data.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert data.headers["content-type"] == "application/json"
    assert _varies(page, "Accept") and _varies(data, "Accept")
    assert _varies(client.put("/", headers={"Accept": "text/html"}), "Accept")  # a 405
    with open(small_catalog / "products.csv", newline="") as fh:
        product_id = next(csv.DictReader(fh))["product_id"]
    shown = client.get(f"/products/{quote(product_id, safe='')}",
                       headers={"Referer": "http://testserver/?q=attacker+text"})
    assert 'href="/?q=attacker+text"' in shown.text
    assert _varies(shown, "Referer")


def test_a_refused_api_key_is_not_repeated_in_the_error(monkeypatch):
    """A key refused (a character outside Latin-1) was printed whole to the server's log."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_API_KEY", "s3cr3t-0123456789-abcdef€")
    with pytest.raises(VitrineError) as refused:
        load_settings()
    assert "VITRINE_API_KEY" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_markers_after_the_first_scan_are_bounded():
    """Fill bytes and markers after a JPEG's first scan were walked one by one in Python,
    without a bound: 10 MB of them held the interpreter 0.7 s an upload. Past
    MAX_JPEG_STEPS the photo is refused, as a header of too many segments is."""
    from PIL import Image

    from vitrine.errors import ImageError
    from vitrine.image_checks import MAX_JPEG_STEPS
    from vitrine.images import open_image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "JPEG")
    photo = buf.getvalue()
    padded = photo[:-2] + b"\xff\x01" + b"\xff" * (MAX_JPEG_STEPS // 2) + b"\xd9"
    assert open_image(padded, draft_size=224).size == (64, 64)  # (a few are read as ever)
    bomb = photo[:-2] + b"\xff\x01" + b"\xff" * 9_990_000 + b"\xd9"
    with pytest.raises(ImageError, match="markers, segments or fill bytes"):
        open_image(bomb, draft_size=224)


def _png_with_exif(size: tuple[int, int], fields: int) -> bytes:
    """A PNG of ``size`` whose eXIf chunk's first table holds ``fields`` fields, the first
    an orientation of 6 (turn a quarter clockwise)."""
    import struct

    from PIL import Image

    table = struct.pack(">HHII", 0x0112, 3, 1, 6 << 16) + b"".join(
        struct.pack(">HHII", 0x9000 + i % 0x6000, 3, 1, 0) for i in range(1, fields))
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", fields) + table \
        + b"\x00\x00\x00\x00"
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG", exif=exif)
    return buf.getvalue()


def test_an_exif_table_of_too_many_fields_is_not_walked(monkeypatch):
    """A 1-pixel PNG of 786 kB whose eXIf chunk holds 65,535 fields held the interpreter
    0.2 s an upload (Pillow walks them one by one, in Python; a plain photo decodes in under
    a millisecond): the block is left unread, as a broken one is, and the photo used as
    stored. A photo's own few fields still turn it."""
    from PIL import Image

    from vitrine.images import open_image

    walked = []
    getexif = Image.Image.getexif

    def spy(img):
        walked.append(len(img.info.get("exif", b"")))
        return getexif(img)

    monkeypatch.setattr(Image.Image, "getexif", spy)
    assert open_image(_png_with_exif((2, 1), 12)).size == (1, 2)  # turned
    bomb = _png_with_exif((2, 1), 65_535)
    assert len(bomb) > 780_000
    assert open_image(bomb).size == (2, 1)  # as stored
    assert all(size < 780_000 for size in walked)
