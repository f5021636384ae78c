"""Photos on the web: the small copies the cards show (a shop's multi-megabyte photos are not
sent 24 at a time to a catalogue page), and formats browsers cannot show (HEIF, TIFF) sent as
a bounded JPEG copy."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def _store(tmp_path, embedder):
    """A store of five products: a large photo, a small one (a demo-sized JPEG), a TIFF, a
    TIFF named .png and a PNG named .jpg."""
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    rng = np.random.default_rng(0)
    folder = tmp_path / "catalog" / "bolsas"
    folder.mkdir(parents=True)
    noise = rng.integers(0, 255, (1500, 2400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "grande.jpg", quality=95)
    Image.fromarray(noise[:300, :225]).resize((225, 300)).save(folder / "pequena.jpg",
                                                               quality=60)
    Image.fromarray(noise[:200, :200]).save(folder / "scan.tif")
    Image.fromarray(noise[:100, :100]).save(folder / "scan2.png", format="TIFF")
    Image.fromarray(noise[:100, :100]).save(folder / "logo.jpg", format="PNG")
    store = open_store(tmp_path / "store", create=True)
    index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    return tmp_path / "store", folder


def test_cards_get_small_copies_of_large_photos(settings, embedder, tmp_path):
    from vitrine.api import create_app

    store, folder = _store(tmp_path, embedder)
    client = TestClient(create_app(settings, store, embedder=embedder))
    page = client.get("/").text
    assert 'src="/images/bolsas%2Fgrande.jpg?size=card"' in page

    big = folder / "grande.jpg"
    r = client.get("/images/bolsas/grande.jpg", params={"size": "card"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    card = Image.open(io.BytesIO(r.content))
    assert max(card.size) == 448 and card.size[0] / card.size[1] == 2400 / 1500
    assert len(r.content) < big.stat().st_size / 10
    etag = r.headers["etag"]
    assert client.get("/images/bolsas/grande.jpg", params={"size": "card"},
                      headers={"If-None-Match": etag}).status_code == 304
    full = client.get("/images/bolsas/grande.jpg")
    assert full.content == big.read_bytes() and full.headers["etag"] != etag

    # a photo already small is sent as it is; a TIFF becomes a JPEG card
    small = client.get("/images/bolsas/pequena.jpg", params={"size": "card"})
    assert small.content == (folder / "pequena.jpg").read_bytes()
    tif = client.get("/images/bolsas/scan.tif", params={"size": "card"})
    assert tif.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(tif.content)).size == (200, 200)
    # the format is told by the file's bytes, not its name: a TIFF named .png is a JPEG copy,
    # a PNG named .jpg is sent as it is, as the PNG it is
    for name, kind in (("scan2.png", "image/jpeg"), ("logo.jpg", "image/png")):
        got = client.get(f"/images/bolsas/{name}")
        assert got.headers["content-type"] == kind
        assert Image.open(io.BytesIO(got.content)).format == kind.split("/")[1].upper()
    assert client.get("/images/bolsas/logo.jpg").content == (folder / "logo.jpg").read_bytes()
    # a byte range is served; a malformed Range header is ignored (RFC 9110), not a 400
    part = client.get("/images/bolsas/logo.jpg", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == (folder / "logo.jpg").read_bytes()[:10]
    whole = client.get("/images/bolsas/logo.jpg", headers={"Range": "bytes=abc"})
    assert whole.status_code == 200 and whole.content == (folder / "logo.jpg").read_bytes()

    # the photo replaced in place (same name, new content): the card follows it
    red = np.random.default_rng(1).integers(0, 60, (600, 1200, 3), dtype=np.uint8)
    red[..., 0] += 190
    Image.fromarray(red).save(big, quality=95)
    os.utime(big, ns=(big.stat().st_atime_ns, big.stat().st_mtime_ns + 10**9))
    again = client.get("/images/bolsas/grande.jpg", params={"size": "card"})
    assert again.headers["etag"] != etag
    assert Image.open(io.BytesIO(again.content)).size == (448, 224)
    assert np.asarray(Image.open(io.BytesIO(again.content)))[100, 100, 0] > 180
    assert client.get("/images/bolsas/grande.jpg", params={"size": "huge"}).status_code == 422


def test_a_product_page_shows_a_large_photo_as_a_bounded_copy(settings, embedder, tmp_path):
    """A product page's photo fills a box at most 420 px wide: a large photo in a browser's
    format was sent whole (a phone's 12-MP JPEG, 5.6 MB, to a phone), where a photo
    browsers cannot show got a copy at most 2048 px on a side; now both do. A small photo is
    sent as it is, and the photo's own address still sends the file."""
    import re

    from vitrine.api import create_app

    store, folder = _store(tmp_path, embedder)
    client = TestClient(create_app(settings, store, embedder=embedder))
    for name, bounded in (("grande.jpg", True), ("pequena.jpg", False)):
        page = client.get(f"/products/bolsas%2F{name}").text
        src = re.search(r'<figure class="product-photo">\s*<img src="([^"]+)"', page)[1]
        shown = client.get(src)
        assert shown.status_code == 200, src
        original = (folder / name).read_bytes()
        if bounded:
            assert Image.open(io.BytesIO(shown.content)).size == (2048, 1280)
            assert shown.headers["content-type"] == "image/jpeg"
            assert len(shown.content) < len(original) * 0.75
            assert client.get(src, headers={"If-None-Match": shown.headers["etag"]}
                              ).status_code == 304
        else:
            assert shown.content == original
    assert client.get("/images/bolsas/grande.jpg").content == (folder / "grande.jpg").read_bytes()


def _p3_profile() -> bytes:
    """An RGB colour profile of Display P3's primaries (an iPhone's JPEG holds one): Little
    CMS's sRGB with the red, green and blue colorants changed."""
    import struct

    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    primaries = {b"rXYZ": (0.5151, 0.2412, -0.0011), b"gXYZ": (0.2920, 0.6922, 0.0419),
                 b"bXYZ": (0.1571, 0.0666, 0.7841)}
    for i in range(struct.unpack(">I", data[128:132])[0]):
        tag, at, _ = struct.unpack(">4sII", data[132 + 12 * i:144 + 12 * i])
        if tag in primaries:
            data[at + 8:at + 20] = b"".join(struct.pack(">i", round(v * 65536))
                                            for v in primaries[tag])
    data[84:100] = bytes(16)  # (the profile's id, a digest of the old bytes)
    return bytes(data)


@pytest.fixture(scope="module")
def large_photos(embedder, tmp_path_factory):
    """A store of photos over VIEW_PHOTO_BYTES: Display P3 ones (a JPEG, a PNG, a PNG cut
    out on transparency) and animations (a GIF, a WebP), and its catalogue folder; made
    once for the module (writing and indexing them is most of these tests' time): the
    tests read them, each through a server over its own copy of the store."""
    from vitrine.api import VIEW_PHOTO_BYTES
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    root = tmp_path_factory.mktemp("large")
    folder = root / "catalog" / "bolsas"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    red = rng.integers(0, 40, (1500, 2400, 3), dtype=np.uint8)
    red[..., 0] += 180
    profile = _p3_profile()
    Image.fromarray(red).save(folder / "p3.jpg", quality=95, icc_profile=profile)
    Image.fromarray(red).save(folder / "p3.png", icc_profile=profile)
    rgba = Image.fromarray(red).convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(folder / "p3-cutout.png", icc_profile=profile)
    frames = [Image.fromarray(rng.integers(0, 255, (500, 500, 3), dtype=np.uint8))
              for _ in range(4)]
    frames[0].save(folder / "gira.webp", save_all=True, append_images=frames[1:],
                   duration=100, quality=90)
    frames = [f.convert("P") for f in frames]
    frames[0].save(folder / "gira.gif", save_all=True, append_images=frames[1:], duration=100)
    assert all(f.stat().st_size > VIEW_PHOTO_BYTES for f in folder.iterdir())
    store = open_store(root / "store", create=True)
    index_catalog(root / "catalog", store, embedder, show_progress=False)
    store.close()
    return root / "store", folder


def _large_photos(large_photos, tmp_path, embedder, settings):
    """A client of a server over a copy of the :func:`large_photos` store (the copies it
    makes of the photos stay this test's), and the photos' folder."""
    import shutil

    from vitrine.api import create_app

    store, folder = large_photos
    shutil.copytree(store, tmp_path / "store")
    return TestClient(create_app(settings, tmp_path / "store", embedder=embedder)), folder


def test_a_product_pages_copy_shows_the_photos_colours(settings, embedder, tmp_path,
                                                      large_photos):
    """The product page's copy of a large photo (``size=view``) dropped its colour profile,
    its pixels still those of the profile's space: a phone's Display P3 JPEG, sent whole
    before, was shown as sRGB (its red 219,0,0 as 197,19,19), as was a PNG's, also one cut
    out on transparency. The copy's pixels are now sRGB (image_colour.in_srgb)."""
    from PIL import ImageCms

    client, folder = _large_photos(large_photos, tmp_path, embedder, settings)
    srgb = ImageCms.createProfile("sRGB")

    def as_srgb(img: Image.Image) -> np.ndarray:  # (what a browser shows)
        icc = img.info.get("icc_profile")
        if icc:
            img = ImageCms.profileToProfile(img.convert("RGB"),
                                            ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb)
        return np.asarray(img.convert("RGB"), np.float32).mean(axis=(0, 1))

    for name in ("p3.jpg", "p3.png", "p3-cutout.png"):
        wanted = as_srgb(Image.open(folder / name))
        shown = client.get(f"/images/bolsas%2F{name}", params={"size": "view"})
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        copy = Image.open(io.BytesIO(shown.content))
        assert copy.size == (2048, 1280)
        assert np.abs(as_srgb(copy) - wanted).max() < 4, name


def test_a_product_page_shows_a_large_animation_as_it_is(settings, embedder, tmp_path,
                                                        large_photos):
    """A large animated GIF or WebP (a product turning) was sent as it is to the product
    page before ``size=view``, which made it its first frame, a still JPEG."""
    client, folder = _large_photos(large_photos, tmp_path, embedder, settings)
    for name in ("gira.gif", "gira.webp"):
        shown = client.get(f"/images/bolsas%2F{name}", params={"size": "view"})
        sent_whole = shown.content == (folder / name).read_bytes()  # (not a 1-MB diff)
        assert sent_whole, (name, shown.headers["content-type"])
        assert client.get(f"/images/bolsas%2F{name}", params={"size": "view"}, headers={
            "If-None-Match": shown.headers["etag"]}).status_code == 304
    # a large photo of those formats that is still gets the copy
    assert client.get("/images/bolsas%2Fp3.png", params={"size": "view"}
                      ).headers["content-type"] == "image/jpeg"


def test_a_photo_rewritten_with_its_old_time_and_size_is_a_new_version(settings, embedder,
                                                                       tmp_path):
    """A photo's file replaced by one of the same size and time (uncompressed TIFF or BMP
    photos of one size, unpacked from a supplier's zip with its times) kept its ETag: a
    browser revalidating it was told 304 and kept showing the old photo, and the server
    its old copy."""
    from vitrine.api import create_app, file_version

    store, folder = _store(tmp_path, embedder)
    client = TestClient(create_app(settings, store, embedder=embedder))
    tif = folder / "scan.tif"
    before = client.get("/images/bolsas/scan.tif", params={"size": "card"})
    old = tif.stat()
    Image.fromarray(np.full((200, 200, 3), (220, 20, 20), dtype=np.uint8)).save(tif)
    os.utime(tif, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert tif.stat().st_size == old.st_size and tif.stat().st_mtime_ns == old.st_mtime_ns
    after = client.get("/images/bolsas/scan.tif", params={"size": "card"},
                       headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert np.asarray(Image.open(io.BytesIO(after.content)))[100, 100, 0] > 180  # the new one
    # another file of the same time and size (the product moved to it) is another version
    twin = folder / "scan-twin.tif"
    twin.write_bytes(tif.read_bytes())
    os.utime(twin, ns=(old.st_atime_ns, old.st_mtime_ns))
    stat = tif.stat()
    assert file_version(twin, stat) != file_version(tif, stat)


def test_a_photo_deleted_while_it_is_sent_goes_out_whole(settings, embedder, tmp_path,
                                                         monkeypatch):
    """A photo replaced or deleted (through the API, by another server) between the answer's
    headers and its body: the version the headers describe is sent whole, not a 500 or a cut
    connection; asked again, the photo is a 404."""
    import vitrine.api
    from vitrine.api import create_app

    store, folder = _store(tmp_path, embedder)
    client = TestClient(create_app(settings, store, embedder=embedder))
    for name, headers, status, part in (("pequena.jpg", {}, 200, slice(None)),
                                        ("logo.jpg", {"Range": "bytes=0-9"}, 206, slice(10))):
        photo = folder / name
        data = photo.read_bytes()
        real_init = vitrine.api.PhotoFile.__init__

        def init_then_delete(self, *args, photo=photo, real_init=real_init, **kwargs):
            real_init(self, *args, **kwargs)
            photo.unlink()

        monkeypatch.setattr(vitrine.api.PhotoFile, "__init__", init_then_delete)
        got = client.get(f"/images/bolsas/{name}", headers=headers)
        assert (got.status_code, got.content) == (status, data[part])
        monkeypatch.undo()
        gone = client.get(f"/images/bolsas/{name}")
        assert gone.status_code == 404 and name in gone.json()["detail"]


def test_a_large_photo_browsers_cannot_show_is_sent_as_a_bounded_copy(settings, embedder,
                                                                      tmp_path, monkeypatch):
    """A 4000-px TIFF (or an iPhone HEIC) on its product page: a JPEG at most 2048 px on a
    side, made once per version of the file, not a full-size PNG at every request."""
    from vitrine.api import create_app
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    folder = tmp_path / "catalog" / "scans"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(
        folder / "scan.tif")
    store = open_store(tmp_path / "store", create=True)
    index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    import vitrine.api

    made = []
    real = vitrine.api.thumbnail_jpeg
    monkeypatch.setattr(vitrine.api, "thumbnail_jpeg", lambda *a: made.append(a) or real(*a))
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    first = client.get("/images/scans/scan.tif")
    assert first.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(first.content)).size == (2048, 1536)
    assert client.get("/images/scans/scan.tif").content == first.content
    assert len(made) == 1  # made once for this version of the file


def test_a_phone_photo_is_searched_added_and_shown(settings, small_store, small_catalog,
                                                   embedder, tmp_path):
    """An iPhone photo (HEIF) uploaded to search and to add a product: found, stored as
    ``<sha256>.heic`` and served to browsers as a JPEG copy."""
    import shutil

    from pillow_heif import from_pillow

    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    client = TestClient(create_app(settings.model_copy(update={"api_key": "k"}), store,
                                   embedder=embedder))
    source = sorted((small_catalog / "relogio_feminino").iterdir())[0]
    buf = io.BytesIO()
    from_pillow(Image.open(source).convert("RGB")).save(buf, quality=90)
    heic = buf.getvalue()
    found = client.post("/api/search", files={"image": ("IMG_0001.HEIC", heic, "image/heic")})
    assert found.status_code == 200
    assert found.json()["results"][0]["category"] == "relogio_feminino"
    added = client.post("/api/products", headers={"Authorization": "Bearer k"},
                        data={"product_id": "iphone-1", "name": "Relógio", "category": "x"},
                        files={"image": ("IMG_0001.HEIC", heic, "image/heic")})
    assert added.status_code == 201, added.text
    assert list((store / "uploads").glob("*.heic"))
    shown = client.get("/images/iphone-1")
    assert shown.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(shown.content)).size == Image.open(source).size


def test_a_server_out_of_open_files_says_try_again_not_gone(settings, embedder, tmp_path,
                                                           monkeypatch):
    """At the process's open-file limit (EMFILE) a stored photo was answered 404, which
    browsers and crawlers take as gone: it is a 503 with Retry-After; a photo that cannot be
    read stays a 404."""
    import errno

    import vitrine.api
    import vitrine.images
    from vitrine.api import create_app

    store, folder = _store(tmp_path, embedder)
    client = TestClient(create_app(settings, store, embedder=embedder))
    real_open = os.open

    def out_of_files(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(vitrine.api.os, "open", out_of_files)
    busy = client.get("/images/bolsas/pequena.jpg")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "too many files open" in busy.json()["detail"]
    monkeypatch.undo()
    # the cards' small copy (and a TIFF's view) opens the photo again to decode it
    real_file_open = open

    def out_of_files_too(path, *args, **kwargs):
        if str(path).startswith(str(folder)):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_file_open(path, *args, **kwargs)

    monkeypatch.setattr(vitrine.images, "open", out_of_files_too, raising=False)
    for address in ("/images/bolsas/grande.jpg?size=card", "/images/bolsas/scan.tif"):
        assert client.get(address).status_code == 503, address
    monkeypatch.undo()
    assert client.get("/images/bolsas/grande.jpg?size=card").status_code == 200
    (folder / "pequena.jpg").unlink()
    assert client.get("/images/bolsas/pequena.jpg").status_code == 404
    assert client.get("/images/bolsas/grande.jpg").status_code == 200


def test_a_photo_turned_into_a_link_outside_is_not_served_when_links_out_are_refused(
        settings, embedder, tmp_path):
    """VITRINE_FOLLOW_OUTSIDE_LINKS=false: a stored photo replaced by a link to a file
    elsewhere (a supplier's zip unpacked over the catalogue) was served until the next
    `index` (helper-153); now a 404. A link inside the catalogue is served, and with the
    setting on, the link outside is followed as before."""
    import shutil

    from vitrine.api import create_app

    store, folder = _store(tmp_path, embedder)
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copyfile(folder / "pequena.jpg", secret)
    (folder / "logo.jpg").unlink()
    (folder / "logo.jpg").symlink_to(secret)
    (folder / "scan2.png").unlink()
    (folder / "scan2.png").symlink_to(folder / "scan.tif")  # (inside: served)
    closed = TestClient(create_app(settings.model_copy(update={"follow_outside_links": False}),
                                   store, embedder=embedder))
    refused = closed.get("/images/bolsas/logo.jpg")
    assert refused.status_code == 404 and "outside the catalogue" in refused.json()["detail"]
    assert closed.get("/images/bolsas/scan2.png").status_code == 200
    assert closed.get("/images/bolsas/grande.jpg").status_code == 200
    opened = TestClient(create_app(settings, store, embedder=embedder))
    assert opened.get("/images/bolsas/logo.jpg").content == secret.read_bytes()
    # a store that records no catalogue folder (older, or written by migrate or the API):
    # its photos with no link in their paths are served, not all refused (helper-155)
    from vitrine.store import open_store

    handle = open_store(store)
    handle.lock_for_writing()
    handle.set_catalog_folder(None)
    handle.close()
    unrecorded = TestClient(create_app(
        settings.model_copy(update={"follow_outside_links": False}), store, embedder=embedder))
    assert unrecorded.get("/images/bolsas/grande.jpg").status_code == 200
    assert unrecorded.get("/images/bolsas/logo.jpg").status_code == 404


def test_an_upload_folder_inside_the_catalogue_that_links_elsewhere_is_served(settings,
                                                                              embedder,
                                                                              tmp_path):
    """Links out refused: a photo in the store's uploads folder, inside the catalogue and a
    link to another disk, was judged against the catalogue alone and refused (helper-156)."""
    import shutil

    from vitrine.service import VitrineService

    store, folder = _store(tmp_path, embedder)
    disk = tmp_path / "disk" / "uploads"
    disk.mkdir(parents=True)
    inside = folder.parent / "loja"
    shutil.move(store, inside)
    (inside / "uploads").symlink_to(disk)
    photo = disk / ("ab" * 32 + ".jpg")
    shutil.copyfile(folder / "pequena.jpg", photo)
    service = VitrineService(settings.model_copy(update={"follow_outside_links": False}),
                             inside, embedder)
    try:
        assert service._inside(inside / "uploads" / photo.name)
        assert service._inside(folder / "grande.jpg")
        (folder / "out.jpg").symlink_to(photo)  # (a catalogue photo linking there is not)
        assert not service._inside(folder / "out.jpg")
    finally:
        service.close()


def test_a_jpeg_of_a_coding_browsers_do_not_all_show_is_sent_as_a_copy(settings, embedder,
                                                                        tmp_path):
    """Lossless JPEGs (no browser shows one) and arithmetic-coded ones (not every browser)
    were sent as they are, as their `.jpg` said: a broken picture on the product page and
    the cards (helper-174). They go out as a JPEG copy; a Huffman-coded one, behind a
    large EXIF block, still as it is."""
    from vitrine.api import create_app
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    folder = tmp_path / "catalog" / "fotos"
    folder.mkdir(parents=True)
    data = Path(__file__).parent / "data"
    for name in ("arithmetic.jpg", "lossless.jpg"):
        (folder / name).write_bytes((data / name).read_bytes())
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # (an image description: the frame comes after it)
    Image.fromarray(np.full((64, 96, 3), 90, np.uint8)).save(folder / "plain.jpg", exif=exif)
    plain = (folder / "plain.jpg").read_bytes()  # with a stray byte before a segment (libjpeg
    at = plain.index(b"\xff\xdb")  # passes over it; the frame is not found: sent as it is)
    (folder / "stray.jpg").write_bytes(plain[:at] + b"\x00" + plain[at:])
    store = open_store(tmp_path / "store", create=True)
    index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    for name in ("arithmetic.jpg", "lossless.jpg"):
        raw = (folder / name).read_bytes()
        for size in ("", "?size=card"):
            sent = client.get(f"/images/fotos/{name}{size}")
            assert sent.status_code == 200 and sent.content != raw, (name, size)
            assert Image.open(io.BytesIO(sent.content)).format == "JPEG"
            assert b"\xff\xc0" in sent.content  # (baseline)
    for name in ("plain.jpg", "stray.jpg"):
        assert client.get(f"/images/fotos/{name}").content == (folder / name).read_bytes()


def test_a_photo_turned_by_metadata_browsers_ignore_is_shown_upright(settings, embedder,
                                                                      tmp_path):
    """Vitrine turns a photo as its EXIF or XMP orientation says (its vector, its card copy,
    its duplicates), but browsers ignore a WebP's EXIF, an XMP orientation and a PNG's eXIf
    after its picture (Chromium draws them as stored): a small WebP stored sideways with
    Orientation 6 (`cwebp -metadata exif` of a phone photo) was sent as it is and shown
    sideways on its page and card, while a larger one's card copy, and the search, were
    upright (helper-348). The pages get the upright copy; a JPEG whose EXIF browsers apply
    still goes out as it is, and the photo's own address sends the file."""
    import struct
    import zlib

    from vitrine.api import create_app
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    folder = tmp_path / "catalog" / "fotos"
    folder.mkdir(parents=True)
    upright = np.zeros((120, 80, 3), np.uint8)
    upright[:40] = (30, 30, 200)  # a blue top over red: portrait
    upright[40:] = (200, 30, 30)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 120 x 80
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "sideways.webp", "WEBP", quality=90, exif=exif.tobytes())
    stored.save(folder / "phone.jpg", quality=90, exif=exif.tobytes())
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           b' tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    stored.save(folder / "xmp.jpg", quality=90, xmp=xmp)
    buf = io.BytesIO()
    stored.save(buf, "PNG")
    png = buf.getvalue()
    body = exif.tobytes()[6:]  # (an eXIf chunk after IDAT: before IEND)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(
        ">I", zlib.crc32(b"eXIf" + body))
    end = png.rindex(b"IEND") - 4
    (folder / "late.png").write_bytes(png[:end] + chunk + png[end:])
    store = open_store(tmp_path / "store", create=True)
    index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    for name in ("sideways.webp", "xmp.jpg", "late.png"):
        for size in ("card", "view"):
            sent = client.get(f"/images/fotos/{name}", params={"size": size})
            shown = Image.open(io.BytesIO(sent.content))
            assert sent.headers["content-type"] == "image/jpeg", (name, size)
            assert shown.size == (80, 120), (name, size)  # upright, as searched
            top = np.asarray(shown.convert("RGB"))[5, 40]
            assert top[2] > 150 and top[0] < 100, (name, size)
        assert client.get(f"/images/fotos/{name}").content == (folder / name).read_bytes()
    for size in ("card", "view"):  # a browser turns this one itself
        assert client.get("/images/fotos/phone.jpg", params={"size": size}).content == \
            (folder / "phone.jpg").read_bytes()


def test_whether_browsers_turn_a_photo_is_read_once_a_version(settings, embedder, tmp_path,
                                                             monkeypatch):
    """Whether a photo is sent as it is or as its upright copy was found at each request of
    it, a browser's 304 revalidation too: the whole file read, and every pixel of a PNG
    with an XMP orientation decoded (Photoshop writes tiff:Orientation 1; 37 ms a 1,400 px
    photo: a product page's photo 203 -> 28 requests a second). Found once a file version;
    the file changed, found again."""
    from PIL import PngImagePlugin

    import vitrine.api
    from vitrine.api import create_app
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    folder = tmp_path / "catalog" / "bolsas"
    folder.mkdir(parents=True)
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           '22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
           'tiff:Orientation="1"/></rdf:RDF></x:xmpmeta>')
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    photo = folder / "bolsa.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photo, pnginfo=info)
    store = open_store(tmp_path / "store", create=True)
    index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    asked = []
    read = vitrine.api.turned_as_browsers_show
    monkeypatch.setattr(vitrine.api, "turned_as_browsers_show",
                        lambda fh, limit: asked.append(limit) or read(fh, limit))
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    first = client.get("/images/bolsas/bolsa.png", params={"size": "view"})
    assert first.status_code == 200 and first.content == photo.read_bytes()
    for _ in range(3):
        again = client.get("/images/bolsas/bolsa.png", params={"size": "view"},
                           headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304
    assert client.get("/images/bolsas/bolsa.png", params={"size": "view"}).status_code == 200
    assert len(asked) == 1
    Image.new("RGB", (300, 200), (30, 30, 200)).save(photo, pnginfo=info)
    os.utime(photo, ns=(1, 1))  # (another version: its times and inode's change time)
    assert client.get("/images/bolsas/bolsa.png", params={"size": "view"}).status_code == 200
    assert len(asked) == 2
