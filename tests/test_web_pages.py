"""The server-rendered web page (without a browser) and the `serve` / `demo` commands."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from html import escape as html_escape
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest
from conftest import copy_subset
from fastapi.testclient import TestClient

KEY = "page-key"
CLI = [sys.executable, "-m", "vitrine.cli"]


@pytest.fixture(scope="module")
def rows(small_catalog) -> list[dict]:
    with open(small_catalog / "products.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def client(settings, small_store, embedder) -> TestClient:
    from vitrine.api import create_app

    return TestClient(create_app(settings, small_store, embedder=embedder))


def test_serve_of_a_vitrine_imported_from_a_zip_says_it_cannot(small_store, settings, tmp_path,
                                                                monkeypatch):
    """Vitrine imported from a zip (its other commands run so) could not serve its pages'
    files, and said so in a traceback ("Directory … does not exist"): one sentence now
    (helper-180)."""
    import zipfile

    import vitrine
    from vitrine.errors import VitrineError

    package = Path(vitrine.__file__).parent
    archive = tmp_path / "vitrine.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in package.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(package.parent))
    code = ("import sys\nsys.path.insert(0, sys.argv.pop(1))\nfrom vitrine.cli import main\n"
            "sys.argv[0] = 'vitrine'\nmain()")
    proc = subprocess.run([sys.executable, "-c", code, str(archive), "serve", "--store",
                           str(small_store), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"({archive}/vitrine/web: Vitrine imported from a zip?)" in said
    # before the model and the store (it was said after both: 7 s, the store left open:
    # helper-185)
    from vitrine.api import create_app
    from vitrine.web import pages

    opened = []
    monkeypatch.setattr(pages, "HERE", archive / "vitrine" / "web")
    monkeypatch.setattr("vitrine.api.VitrineService", lambda *a, **k: opened.append(a))
    with pytest.raises(VitrineError, match="imported from a zip"):
        create_app(settings, small_store)
    assert opened == []


def cards(html: str) -> int:
    return html.count('<li class="card">')


def category_field(html: str) -> str:
    """A page's category field alone, from its name to the end of its list (the search page
    has the price and attribute filter's lists too)."""
    start = html.index('name="category"')
    return html[start:min(i for i in (html.find("</select>", start),
                                      html.find("</datalist>", start)) if i >= 0)]


def card_categories(html: str) -> list[str]:
    """The category shown on each product card, in order."""
    return re.findall(r'<span class="category">([^<]+)</span>', html)


def test_catalogue_pages_filters_and_languages(client, rows):
    home = client.get("/")
    assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
    html = home.text
    assert '<html lang="pt-BR">' in html and "Catálogo" in html and "48 produtos" in html
    assert cards(html) == 24 and 'rel="next" href="/?page=2"' in html
    assert 'href="/?lang=en"' in html  # the language toggle
    # a card's thumbnail is silent: the title in the same link names it (not twice)
    assert re.search(r'<a class="card-link" href="/products/[^"]+">\s*<span class="thumb">'
                     r'<img src="/images/[^"]+" alt="" [^>]*></span>\s*'
                     r'<span class="card-title">[^<]+</span>', html)
    assert "<title>Catálogo · Vitrine</title>" in html
    second = client.get("/", params={"page": 2}).text
    assert cards(second) == 24 and 'rel="prev"' in second and 'rel="next"' not in second
    # each page's title says which it is (the tab, the history, a screen reader's first words)
    assert "<title>Catálogo · Página 2 · Vitrine</title>" in second
    # the page links are one landmark named for what it is; the current page is marked
    assert '<nav class="pagination" aria-label="Paginação">' in second
    assert '<span aria-current="page">Página 2 de 2</span>' in second

    heels = client.get("/", params={"category": "salto_feminino"}).text
    assert cards(heels) == 6 and "6 produtos" in heels
    assert '<a class="button secondary" href="/">Limpar</a>' in heels
    assert re.search(r"<title>[^<·]+ · Catálogo · Vitrine</title>", heels)
    searched = client.get("/", params={"q": "zzzz"}).text
    assert "<title>“zzzz” · Catálogo · Vitrine</title>" in searched
    names = {r["name"] for r in rows if r["category"] == "salto_feminino"}
    assert all(name.replace("'", "&#39;") in heels for name in names)

    target = rows[9]
    found = client.get("/", params={"q": target["name"][:15]}).text
    assert target["name"].replace("'", "&#39;") in found
    assert "Nenhum produto encontrado." in client.get("/", params={"q": "zzzz"}).text

    english = client.get("/", params={"lang": "en", "category": "salto_feminino"}).text
    assert '<html lang="en">' in english and "Catalogue" in english and "6 products" in english
    assert "/products/" in english and "?lang=en" in english
    assert 'href="/?category=salto_feminino"' in english  # toggle back keeps the filter
    # a language tag as browsers and people write it (each was Portuguese: helper-222)
    for typed in ("EN", "en-US", " en_GB "):
        again = client.get("/", params={"lang": typed, "category": "salto_feminino"}).text
        assert again == english, typed
    assert '<html lang="pt-BR">' in client.get("/", params={"lang": "pt-BR"}).text
    assert client.get("/", params={"page": 0}).status_code == 422


def test_every_text_exists_in_both_languages_and_renders():
    from vitrine.web.text import TEXT

    assert set(TEXT["pt"]) == set(TEXT["en"])
    # Jinja's t.name looks up attributes first: a key named like a dict method would render
    # the method instead of the text.
    assert not [key for key in TEXT["pt"] if hasattr(dict, key)]


def test_product_page_shows_similar_products(client, rows):
    row = rows[12]
    page = client.get(f"/products/{row['product_id']}", params={"same": 0})
    assert page.status_code == 200
    html = page.text
    assert f"<h1>{row['name']}</h1>" in html.replace("&#39;", "'")
    assert "Produtos similares" in html and "Preço não informado" in html
    assert row["colour"] in html
    similar = html.split("Produtos similares", 1)[1]
    scores = [int(s) for s in re.findall(r"(\d+)% similar", similar)]
    assert cards(similar) == 10 and len(scores) == 10
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 100 for s in scores)
    assert f'class="card-link" href="/products/{row["product_id"]}"' not in similar

    english = client.get(f"/products/{row['product_id']}", params={"lang": "en"}).text
    assert "Similar products" in english and "Price not given" in english
    # "Back to the catalogue" goes back to the page the shopper came from, filters and all
    came = "http://testserver/?category=rel%C3%B3gio&q=a+b&page=2&x=1"
    back = client.get(f"/products/{row['product_id']}", headers={"Referer": came}).text
    assert '<p class="breadcrumb"><a href="/?category=rel%C3%B3gio&amp;q=a+b&amp;page=2">' in back
    for other in ("http://elsewhere.example/?category=x", "http://testserver/products/1",
                  "http://testserver/?page=-1"):
        back = client.get(f"/products/{row['product_id']}", params={"lang": "en"},
                          headers={"Referer": other}).text
        assert '<p class="breadcrumb"><a href="/?lang=en">' in back, other
    # and after the product page's own links (only its category, the other language), whose
    # Referer is the product page: the way back led to the catalogue's first page
    import html as html_text
    from urllib.parse import parse_qs, urlsplit

    page = client.get(f"/products/{row['product_id']}", headers={"Referer": came}).text
    toggles = re.findall(r'<a href="([^"#]+)#similar-title"', page)
    switch = re.search(r'class="lang-switch" href="([^"]+)"', page).group(1)
    # and its similar products' cards (helper-216: a similar product's way back led there)
    similar = re.findall(r'class="card-link" href="([^"]+)"', page)
    assert len(toggles) == 2 and len(similar) == 5  # (its own category's five others)
    assert {parse_qs(urlsplit(html_text.unescape(link)).query).get("back", [""])[0]
            for link in similar} == {"category=rel%C3%B3gio&q=a+b&page=2"}
    for link in (*toggles, switch, similar[0]):
        followed = client.get(html_text.unescape(link), headers={
            "Referer": f"http://testserver/products/{row['product_id']}"}).text
        back = re.search(r'<p class="breadcrumb"><a href="([^"]+)"', followed).group(1)
        assert html_text.unescape(back).startswith("/?category=rel%C3%B3gio&q=a+b&page=2"), link
    odd = client.get(f"/products/{row['product_id']}",
                     params={"back": "page=-1&next=//evil.example&q=x"}).text
    assert '<p class="breadcrumb"><a href="/?q=x">' in odd
    for page_number in ("\uff15", "99999999999999999999", "100001"):  # a 422 when followed
        odd = client.get(f"/products/{row['product_id']}",
                         params={"back": f"page={page_number}&q=x"}).text
        assert '<p class="breadcrumb"><a href="/?q=x">' in odd, page_number
    kept = client.get(f"/products/{row['product_id']}", params={"back": "page=100000"}).text
    assert '<p class="breadcrumb"><a href="/?page=100000">' in kept

    missing = client.get("/products/no-such", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and "Página ou produto não encontrado." in missing.text
    assert "<title>Não encontrado · Vitrine</title>" in missing.text  # not "something wrong"
    assert "<h1>Não encontrado</h1>" in missing.text


def test_prices_are_formatted_and_text_is_escaped(settings, small_store, embedder, tmp_path,
                                                  small_catalog, rows):
    from vitrine.api import create_app
    from vitrine.web.text import format_price

    assert format_price(1299.9, "pt") == "R$\u00a01.299,90"
    assert format_price(1299.9, "en") == "R$1,299.90"
    assert format_price(0, "pt") == "R$\u00a00,00" and format_price(None, "pt") == ""
    assert format_price(-0.0, "pt") == "R$\u00a00,00"  # not "R$ -0,00"
    # to the cent half up, as the price is written (the float's rounding gave 0,12 and 2,67)
    assert [format_price(v, "pt") for v in (0.125, 2.675, 12.3456, 0.005)] == [
        "R$\u00a00,13", "R$\u00a02,68", "R$\u00a012,35", "R$\u00a00,01"]

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    app = create_app(settings.model_copy(update={"api_key": KEY}), store, embedder=embedder)
    client = TestClient(app)
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    added = client.post("/api/products", headers={"Authorization": f"Bearer {KEY}"},
                        files={"image": ("p.jpg", photo, "image/jpeg")},
                        data={"product_id": "caro", "name": "<script>alert(1)</script>",
                              "price": "1299,9", "description": "Bonito & barato"})
    assert added.status_code == 201
    html = client.get("/products/caro").text
    assert "R$\u00a01.299,90" in html and "Bonito &amp; barato" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert "R$1,299.90" in client.get("/products/caro", params={"lang": "en"}).text


def test_odd_products_and_errors_read_well(settings, small_store, embedder, tmp_path,
                                           small_catalog, rows, monkeypatch):
    """Products with no category, ids with URL characters and TIFF photos; error pages in
    the page's language; a 500 in one sentence with the security headers."""
    import io

    from PIL import Image

    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    app = create_app(settings.model_copy(update={"api_key": KEY, "max_upload_bytes": 300_000}),
                     store, embedder=embedder)
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {KEY}"}
    tiff = io.BytesIO()
    Image.open(small_catalog / rows[9]["image"]).convert("RGB").save(tiff, "TIFF")
    for pid in ("sem-categoria", "a?b#c"):  # no category (the API's default); URL characters
        added = client.post("/api/products", headers=auth, data={"product_id": pid},
                            files={"image": ("p.tif", tiff.getvalue(), "image/tiff")})
        assert added.status_code == 201, added.text

    # the category selects keep "all categories" chosen; no blank option of their own
    for page in (client.get("/").text, client.get("/search").text):
        options = re.findall(r'<option value="([^"]*)"( selected)?>', category_field(page))
        assert options[0] == ("", "") and all(value for value, _ in options[1:])
        assert not any(selected for _, selected in options)
    assert "50 produtos" in client.get("/").text
    # a product's page is in the catalogue, not the catalogue page (a screen reader said
    # "current page" on its link); without a category, no link reading "—" to the catalogue
    nameless = client.get("/products/sem-categoria").text
    assert '<a href="/" aria-current="true">Catálogo</a>' in nameless
    assert 'aria-current="page">Catálogo' in client.get("/").text
    assert ">—</a>" not in nameless and "<p class=\"category\">" not in nameless
    # its similar products come from every category (helper-226: from its own, none, only
    # the other product without one showed, and no link to the rest)
    shown = card_categories(nameless.split('id="similar-title"', 1)[1])
    assert len(shown) == 10 and len(set(shown)) > 2, shown
    # a category filter of no letters ("_", " ") is no other spelling of "no category": it
    # matches nothing, in the list and the search alike (the two read it apart: helper-226)
    for typed in ("_", "  ", "__"):
        listed = client.get("/api/products", params={"category": typed}).json()
        assert listed["products"] == [], typed
        assert client.post("/api/search", params={"category": typed}, files={
            "image": ("p.tif", tiff.getvalue(), "image/tiff")}).json()["results"] == []

    photo = client.get("/images/sem-categoria")  # TIFF: browsers need another format
    assert photo.headers["content-type"] == "image/jpeg"  # a copy, made once per version
    assert Image.open(io.BytesIO(photo.content)).size == Image.open(tiff).size
    assert photo.headers["cache-control"] == "no-cache"  # a replaced photo shows at once
    jpeg = client.get(f"/images/{rows[0]['product_id']}")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content == (small_catalog / rows[0]["image"]).read_bytes()
    for path, first in (("/images/sem-categoria", photo), (f"/images/{rows[0]['product_id']}",
                                                           jpeg)):  # revalidation is cheap
        again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        # "*": any version of a photo that exists (RFC 9110; it was a 200)
        assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304
    changed = client.post("/api/products", headers=auth, data={"product_id": "sem-categoria"},
                          files={"image": ("p.jpg", (small_catalog / rows[2]["image"])
                                           .read_bytes(), "image/jpeg")})
    assert changed.status_code == 200  # replaced: the old ETag no longer matches
    assert client.get("/images/sem-categoria",
                      headers={"If-None-Match": photo.headers["etag"]}).status_code == 200
    # the style sheet and script, at addresses a new version keeps, are asked for each time
    # (a browser may reuse one unasked for a tenth of its age: helper-221), cheaply
    for path in ("/static/app.js", "/static/filters.js", "/static/carry.js",
                 "/static/style.css"):
        first = client.get(path)
        assert first.headers["cache-control"] == "no-cache", path
        again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"

    page = client.get("/products/a%3Fb%23c").text  # the product whose id is 'a?b#c'
    assert 'href="/products/a%3Fb%23c?lang=en"' in page  # the toggle keeps the same product
    assert "a?b#c" in client.get("/products/a%3Fb%23c", params={"lang": "en"}).text
    for bad_id in (".", ".."):
        refused = client.post("/api/products", headers=auth, data={"product_id": bad_id},
                              files={"image": ("p.tif", tiff.getvalue(), "image/tiff")})
        assert refused.status_code == 422

    for path in ("/", "/search", "/products/sem-categoria", "/images/sem-categoria",
                 "/healthz"):  # link checkers and uptime monitors ask with HEAD
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path

    html = {"Accept": "text/html"}
    bad = client.get("/", params={"page": 0}, headers=html)
    assert bad.status_code == 422 and "O endereço tem um parâmetro inválido." in bad.text
    bad_en = client.get("/", params={"page": 0, "lang": "en"}, headers=html)
    assert "The address has a parameter that is not valid." in bad_en.text
    assert "Este endereço não aceita" in client.put("/", headers=html).text
    big = b"x" * 400_000  # over the limit, refused from its Content-Length before reading
    refused = client.post("/search", headers=html,
                          files={"image": ("big.jpg", big, "image/jpeg")})
    assert refused.status_code == 413 and "<html" in refused.text
    assert "A foto é grande demais (limite de 0,3 MB)." in refused.text
    assert 'id="photo"' in refused.text  # the search page, ready for another photo

    over = client.post("/search", headers=html, data={"category": rows[0]["category"]},
                       files={"image": ("big.jpg", b"x" * 300_001, "image/jpeg")})
    assert over.status_code == 413  # the form was read: its category is kept, as the toggle's
    assert f'href="/search?category={rows[0]["category"]}&amp;lang=en"' in over.text

    def chunks():  # no Content-Length: refused while the form is read, the same page
        for _ in range(40):
            yield b"-" * 10_000

    streamed = client.post("/search", content=chunks(), headers={
        **html, "Content-Type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and 'id="photo"' in streamed.text
    assert "A foto é grande demais (limite de 0,3 MB)." in streamed.text
    # no photo chosen: a form sent without JavaScript holds an empty file part
    kind = rows[0]["category"]
    empty = client.post("/search", headers=html, data={"category": kind},
                        files={"image": ("", b"", "application/octet-stream")})
    assert empty.status_code == 422 and "Escolha uma foto antes de buscar." in empty.text
    assert 'id="photo"' in empty.text and "<title>Erro: Buscar por foto · Vitrine" in empty.text
    assert f'<option value="{kind}" selected>' in empty.text  # the category stays chosen
    # typed as the pages show it ("Relogio masculino"): chosen as a search takes it
    from vitrine.web.text import category_label

    shown = client.post("/search", headers=html, data={"category": category_label(kind)},
                        files={"image": ("", b"", "application/octet-stream")})
    assert f'<option value="{kind}" selected>' in shown.text
    # a field of the form too long (a hand-made request): the form is wrong, not the address
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    for lang, said in (("pt", "O formulário tem um campo inválido."),
                       ("en", "The form has a field that is not valid.")):
        long = client.post("/search", headers=html, params={"lang": lang},
                           data={"category": "a" * 600},
                           files={"image": ("p.jpg", photo, "image/jpeg")})
        assert long.status_code == 422 and said in long.text, long.text
    # a parameter of the address wrong on the same form: the address's sentence
    odd = client.post("/search", headers=html, params={"fragment": "maybe"},
                      files={"image": ("p.jpg", photo, "image/jpeg")})
    assert odd.status_code == 422 and "O endereço tem um parâmetro inválido." in odd.text
    # the store failing as a search without a photo is refused: the refusal all the same
    from vitrine.errors import StoreError
    from vitrine.web import pages as pages_module

    def failing(*args):
        raise StoreError("the store is gone")

    with monkeypatch.context() as patch:
        patch.setattr(pages_module, "page_category", failing)
        gone = client.post("/search", headers=html, data={"category": kind},
                           files={"image": ("", b"", "application/octet-stream")})
    assert gone.status_code == 422 and "Escolha uma foto antes de buscar." in gone.text
    # a photo search the store fails (503): the toggle's search form keeps the category
    with monkeypatch.context() as patch:
        patch.setattr(pages_module, "page_category", failing)
        failed = client.post("/search", headers=html, data={"category": kind},
                             files={"image": ("p.jpg", photo, "image/jpeg")})
    assert failed.status_code == 503, failed.text
    toggle = re.search(r'class="lang-switch" href="([^"]+)"', failed.text).group(1)
    assert toggle == html_escape("/search?" + urlencode({"category": kind, "lang": "en"}))
    # an error page of a GET keeps its address's category (the fix above dropped it)
    for address in (f"/?category={kind}&q=a&page=0", f"/products/nope?category={kind}"):
        error = client.get(address, headers=html)
        assert error.status_code in (404, 422), address
        toggle = re.search(r'class="lang-switch" href="([^"]+)"', error.text).group(1)
        assert f"category={kind}" in toggle, (address, toggle)
    # a path that starts with '//' names another site in a link: the language toggle of its
    # 404 page stays on this one
    lost = client.get("http://testserver//evil.example/x", headers=html)
    assert lost.status_code == 404
    toggle = re.search(r'class="lang-switch" href="([^"]+)"', lost.text).group(1)
    assert toggle == "/evil.example/x?lang=en"
    api = client.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert api.status_code == 413 and api.json()["detail"].startswith("The upload is larger")

    def broken(_service) -> int:
        raise RuntimeError("a bug")

    from vitrine.service import VitrineService

    monkeypatch.setattr(VitrineService, "count", broken)
    failed = TestClient(app, raise_server_exceptions=False).get("/healthz")
    assert failed.status_code == 500
    assert failed.json() == {"detail": "Something went wrong on the server; the error is in "
                                       "its log."}
    assert failed.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in failed.headers["content-security-policy"]
    # the system refusing memory or a thread (a container's limit, a burst of uploads) is
    # not a bug of the server's: try again
    for refused in (MemoryError(), RuntimeError("can't start new thread")):
        def short(_service, refused=refused) -> int:
            raise refused

        monkeypatch.setattr(VitrineService, "count", short)
        busy = TestClient(app, raise_server_exceptions=False).get("/healthz")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert busy.json()["detail"].startswith("The server is short of memory")
        assert busy.headers["x-content-type-options"] == "nosniff"


def test_search_form_works_without_javascript(client, rows, small_catalog):
    form = client.get("/search").text
    assert 'enctype="multipart/form-data"' in form
    assert '<label class="drop-label" for="photo"' in form
    assert 'type="file"' in form and "arraste e solte" in form
    assert "<title>Buscar por foto · Vitrine</title>" in form
    # the formats and the limit are said before a photo is refused, and read with the field
    assert 'aria-describedby="photo-formats"' in form
    assert re.search(r'id="photo-formats">JPEG, PNG, WebP, HEIC \(iPhone\) e outros formatos '
                     r'de foto, até \d+(,\d+)? MB\.<', form)

    row = rows[40]
    photo = (small_catalog / row["image"]).read_bytes()
    page = client.post("/search", files={"image": ("q.jpg", photo, "image/jpeg")})
    assert page.status_code == 200 and "<html" in page.text and "Resultados" in page.text
    assert cards(page.text) == 10
    assert "<title>Resultados · Buscar por foto · Vitrine</title>" in page.text
    first = re.search(r'href="/products/([^"]+)"', page.text.split("Resultados", 1)[1])
    assert first and first.group(1) == row["product_id"]

    fragment = client.post("/search", params={"fragment": 1, "lang": "en"},
                           files={"image": ("q.jpg", photo, "image/jpeg")})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "Results" in fragment.text and "100% similar" in fragment.text

    bad = client.post("/search", params={"fragment": 1},
                      files={"image": ("q.jpg", b"not a photo", "image/jpeg")})
    assert bad.status_code == 400 and 'role="alert"' in bad.text and "JPEG" in bad.text
    # the whole page (no script): the photo field refused, described by the sentence
    bad = client.post("/search", files={"image": ("q.jpg", b"not a photo", "image/jpeg")})
    field = re.search(r'<input id="photo"[^>]*>', bad.text)[0]
    assert 'aria-invalid="true"' in field and 'aria-describedby="photo-formats photo-error"' \
        in field and 'id="photo-error" role="alert"' in bad.text
    assert 'aria-invalid' not in re.search(r'<input id="photo"[^>]*>', page.text)[0]


def test_a_search_answered_before_its_form_is_read_keeps_the_category(
        settings, small_store, embedder, small_catalog, rows):
    """The no-JavaScript form's address carries the category it was shown with, so a search
    answered without reading its form keeps it chosen: a photo over the limit, refused from
    its Content-Length (the page came back with every category), and an upload cut off
    before its closing boundary, said on the search page (it was a 422 "choose a photo").
    The form's own field, once read, is the shopper's choice."""
    from vitrine.api import create_app

    client = TestClient(create_app(settings.model_copy(update={"max_upload_bytes": 300_000}),
                                   small_store, embedder=embedder))
    page = {"Accept": "text/html"}
    kind, other = rows[0]["category"], rows[-1]["category"]
    assert kind != other
    shown = client.get("/search", params={"category": kind, "lang": "en"}, headers=page).text
    action = re.search(r'id="photo-search"[^>]* action="([^"]+)"', shown).group(1)
    assert action == html_escape("/search?" + urlencode({"category": kind, "lang": "en"}))

    big = client.post("/search", params={"category": kind, "lang": "en"}, headers=page,
                      data={"category": kind},
                      files={"image": ("big.jpg", b"x" * 400_000, "image/jpeg")})
    assert big.status_code == 413 and "The photo is too large (limit 0.3 MB)." in big.text
    assert f'<option value="{kind}" selected>' in big.text

    photo = (small_catalog / rows[0]["image"]).read_bytes()
    body = (f'--cut\r\nContent-Disposition: form-data; name="category"\r\n\r\n{kind}\r\n'
            '--cut\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            '\r\n').encode() + photo + b"\r\n--cut--\r\n"
    for lang, said in (("pt", "O envio da foto foi interrompido antes do fim. Envie-a de "
                              "novo."),
                       ("en", "The upload of the photo was cut off before its end. Send it "
                              "again.")):
        cut = client.post("/search", params={"category": kind, "lang": lang},
                          content=body[:len(body) // 2],
                          headers={**page, "Content-Type": "multipart/form-data; boundary=cut"})
        assert cut.status_code == 400 and said in cut.text, cut.text
        assert 'id="photo"' in cut.text and f'<option value="{kind}" selected>' in cut.text

    # the shopper chose another category before sending: the form's field wins
    chose = client.post("/search", params={"category": kind}, headers=page,
                        data={"category": other},
                        files={"image": ("p.jpg", photo, "image/jpeg")})
    assert chose.status_code == 200 and f'<option value="{other}" selected>' in chose.text
    # an error page of such a search whose endpoint never ran: its toggle keeps the address's
    odd = client.post("/search", params={"category": kind, "fragment": "maybe"}, headers=page,
                      files={"image": ("p.jpg", photo, "image/jpeg")})
    assert odd.status_code == 422
    toggle = re.search(r'class="lang-switch" href="([^"]+)"', odd.text).group(1)
    assert toggle == html_escape("/search?" + urlencode({"category": kind, "lang": "en"}))


def test_a_photo_refused_is_said_for_what_is_wrong_with_it(settings, small_store, embedder,
                                                           small_catalog, rows):
    """A photo over the pixel limit and a cut-off JPEG were both "not a photo we can use:
    try a JPEG, PNG or WebP", to a shopper who had just sent one; the API said why. (A
    baseline JPEG is decoded at a fraction of its size, so the large one is a PNG.)"""
    import io

    from PIL import Image

    from vitrine.api import create_app

    client = TestClient(create_app(settings.model_copy(update={"max_image_pixels": 1_500_000}),
                                   small_store, embedder=embedder))
    buffer = io.BytesIO()
    Image.new("RGB", (1500, 1200), (200, 40, 40)).save(buffer, "PNG")
    photo = (small_catalog / rows[0]["image"]).read_bytes()

    def said(data: bytes, lang: str = "pt") -> str:
        page = client.post("/search", params={"fragment": 1, "lang": lang},
                           files={"image": ("q.jpg", data, "image/jpeg")})
        assert page.status_code == 400 and 'role="alert"' in page.text
        return re.search(r'role="alert">([^<]+)<', page.text)[1]

    assert said(buffer.getvalue()) == ("Esta foto tem pixels demais (limite de 1,5 megapixels). "
                                       "Envie uma cópia menor.")
    assert said(buffer.getvalue(), "en") == ("This photo has too many pixels (limit 1.5 "
                                             "megapixels). Send a smaller copy.")
    assert said(photo[:len(photo) // 2]).startswith("Esta foto parece danificada")
    assert said(b"plain text, not a photo").startswith("Este arquivo não é uma foto")
    # an empty file (a phone's photo kept in the cloud) was "not a photo: try a JPEG…"
    assert said(b"").startswith("Este arquivo está vazio (0 bytes)")
    assert said(b"", "en").startswith("This file is empty (0 bytes)")
    long = io.BytesIO()  # a PNG was "not a photo: try a JPEG, PNG or WebP" (helper-155)
    Image.new("L", (70_000, 1)).save(long, "PNG")
    assert said(long.getvalue()) == ("Esta foto tem um lado longo demais (mais de 65.535 "
                                     "pixels). Envie uma cópia menor.")
    assert said(long.getvalue(), "en").startswith("This photo has a side too long")


def test_a_photo_too_small_to_search_by_is_said_so(settings, small_store, embedder):
    """A 16 x 16 photo was searched and answered with products "60 %" alike (helper-348):
    the page says it is too small, in either language, and the API answers 400 with why."""
    import io

    from PIL import Image

    from vitrine.api import create_app

    client = TestClient(create_app(settings, small_store, embedder=embedder))
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, "PNG")
    for lang, sentence in (("pt", "Esta foto é pequena demais para buscar (um lado com menos "
                                  "de 32 pixels). Envie uma cópia maior."),
                           ("en", "This photo is too small to search by (a side under 32 "
                                  "pixels). Send a larger copy.")):
        page = client.post("/search", params={"fragment": 1, "lang": lang},
                           files={"image": ("q.png", buffer.getvalue(), "image/png")})
        assert page.status_code == 400
        assert re.search(r'role="alert">([^<]+)<', page.text)[1] == sentence
    api = client.post("/api/search", files={"image": ("q.png", buffer.getvalue(), "image/png")})
    assert api.status_code == 400
    assert api.json()["detail"] == ("The uploaded file cannot be used as a photo: 16x16 pixels: "
                                    "too small to search by (a side under 32 pixels; send a "
                                    "larger copy).")


def test_an_odd_upload_limit_is_said_rounded_down_to_a_tenth(settings, small_store, embedder):
    """VITRINE_MAX_UPLOAD_BYTES=5242880 (5 MiB) was "até 5,24288 MB" (helper-216): one
    decimal at most, rounded down (a limit never said above itself), beside the field, in
    the script's refusal, on the 413 page and in the API's 413."""
    from vitrine.api import create_app

    client = TestClient(create_app(settings.model_copy(update={"max_upload_bytes": 5_242_880}),
                                   small_store, embedder=embedder))
    for lang, mb, sentence in (("pt", "5,2", "A foto é grande demais (limite de 5,2 MB)."),
                               ("en", "5.2", "The photo is too large (limit 5.2 MB).")):
        page = client.get("/search", params={"lang": lang}).text
        assert page.count(f" {mb} MB") == 2 and "5,24" not in page and "5.24" not in page
        assert f'data-too-large="{sentence}"' in page
        over = client.post("/search", params={"lang": lang}, headers={"Accept": "text/html"},
                           files={"image": ("big.jpg", b"x" * 5_242_881, "image/jpeg")})
        assert over.status_code == 413 and sentence in over.text
    api = client.post("/api/search", files={"image": ("big.jpg", b"x" * 5_242_881, "image/jpeg")})
    assert api.status_code == 413
    assert api.json()["detail"] == "The upload is larger than the limit of 5.2 MB."


def test_search_by_photo_within_a_category(client, rows, small_catalog):
    from vitrine.web.text import category_label

    form = client.get("/search").text
    assert '<select id="search-category" name="category">' in form
    assert all(f'<option value="{c}">' in form for c in {r["category"] for r in rows})

    row = rows[40]
    photo = (small_catalog / row["image"]).read_bytes()
    other = next(r["category"] for r in rows if r["category"] != row["category"])
    page = client.post("/search", data={"category": other},
                       files={"image": ("q.jpg", photo, "image/jpeg")})
    assert page.status_code == 200 and f'<option value="{other}" selected>' in page.text
    labels = card_categories(page.text)
    size = sum(r["category"] == other for r in rows)
    assert len(labels) == min(size, 10) and set(labels) == {category_label(other)}
    # the language toggle opens the search form in the same scope
    assert f'class="lang-switch" href="/search?category={other}&amp;lang=en"' in page.text
    english = client.get("/search", params={"category": other, "lang": "en"}).text
    assert f'<option value="{other}" selected>' in english

    own = client.post("/search", params={"fragment": 1}, data={"category": row["category"]},
                      files={"image": ("q.jpg", photo, "image/jpeg")}).text
    assert set(card_categories(own)) == {
        category_label(row["category"])}
    assert re.search(r'href="/products/([^"]+)"', own).group(1) == row["product_id"]

    none = client.post("/search", data={"category": "no-such-category"},
                       files={"image": ("q.jpg", photo, "image/jpeg")})
    assert none.status_code == 200 and cards(none.text) == 0
    assert "Não há categoria “<bdi>no-such-category</bdi>”." in none.text  # not a bare "no results"


def test_product_page_similar_from_its_own_category_or_every_one(client, rows):
    """Similar products come from the product's own category unless every category is
    asked for (the reference design showed a women's watch men's sneakers), and a similar
    product opened from the list keeps the choice (helper-222: it showed every category
    again)."""
    from vitrine.web.text import category_label

    row = rows[3]
    label = category_label(row["category"])
    path = "/products/" + row["product_id"]
    size = sum(r["category"] == row["category"] for r in rows)
    own = client.get(path).text
    labels = card_categories(own)
    assert len(labels) == size - 1 and set(labels) == {label}
    assert f'class="card-link" href="{path}"' not in own
    # (each lands on the list, not at the top of the page again: a phone's screen is short)
    assert f'<a href="{path}#similar-title" aria-current="true">só {label}</a>' in own
    assert f'<a href="{path}?same=0#similar-title">Todas as categorias</a>' in own
    assert "same=" not in "".join(re.findall(r'class="card-link" href="([^"]+)"', own))
    assert client.get(path, params={"same": 1}).text == own  # (the old links' address)

    every = client.get(path, params={"same": 0, "lang": "en"}).text
    labels = card_categories(every)
    # ten similar products and only five others in its category: other categories show
    assert len(labels) == 10 and label in labels and set(labels) != {label}
    assert (f'<a href="{path}?same=0&amp;lang=en#similar-title" aria-current="true">'
            'All categories</a>') in every
    links = re.findall(r'class="card-link" href="([^"]+)"', every)
    assert len(links) == 10 and all("same=0" in link for link in links)
    assert 'same=0' in re.search(r'class="lang-switch" href="([^"]+)"', every).group(1)
    # a similar product opened from that list shows every category too
    other = next(r for r in rows if r["category"] != row["category"])
    opened = client.get("/products/" + other["product_id"], params={"same": 0}).text
    assert len(set(card_categories(opened))) > 1


def test_counts_pages_and_accent_free_search_read_well(settings, small_store, embedder,
                                                        tmp_path, small_catalog, rows):
    """"1 produto" (not "1 produtos"), past the last page which is the last and a way back
    ("Página 5 de 3" in its navigation read as an error: helper-188), a name found without
    its accents or case."""
    from vitrine.api import create_app

    shutil.copytree(small_store, tmp_path / "store")
    client = TestClient(create_app(settings.model_copy(update={"api_key": KEY}),
                                   tmp_path / "store", embedder=embedder))
    added = client.post("/api/products", headers={"Authorization": f"Bearer {KEY}"},
                        files={"image": ("p.jpg", (small_catalog / rows[0]["image"])
                                         .read_bytes(), "image/jpeg")},
                        data={"product_id": "unico", "name": "Relógio Dourado",
                              "category": "avulso"})
    assert added.status_code == 201, added.text
    one = client.get("/", params={"category": "avulso"}).text
    assert "1 produto<" in one and "1 produtos" not in one
    assert "1 product<" in client.get("/", params={"category": "avulso", "lang": "en"}).text
    home = client.get("/").text
    assert "49 produtos" in home and "Página 1 de 3" in home  # 24 a page
    assert client.get("/", params={"page": 3}).status_code == 200  # (one product on it)
    past = client.get("/", params={"page": 5})
    assert past.status_code == 404  # no such page (a 200 is a page crawlers keep)
    past = past.text
    assert cards(past) == 0 and "Página 5<" in past and "Página 5 de 3" not in past  # (it
    # read as an error: helper-188)
    assert "Não há produtos nesta página. A última é a página 3." in past
    assert '<a href="/">Ir para a página 1</a>' in past
    assert 'rel="prev" href="/?page=3"' in past  # back to the last page, not to empty page 4
    past_en = client.get("/", params={"page": 5, "category": "avulso", "lang": "en"}).text
    assert "Page 5<" in past_en
    assert "There are no products on this page. The last one is page 1." in past_en
    assert '<a href="/?category=avulso&amp;lang=en">Go to page 1</a>' in past_en
    assert "Nenhum produto encontrado." in client.get("/", params={"q": "zzzz"}).text
    past_q = client.get("/", params={"q": "relogio", "page": 3})  # one match in all
    assert past_q.status_code == 404 and client.get("/", params={"q": "zzzz"}).status_code == 200
    past_q = past_q.text
    assert "Não há produtos nesta página." in past_q and 'href="/?q=relogio">Ir para' in past_q
    assert 'rel="prev"' not in past_q  # page 2, as empty, was offered before
    next_to = client.get("/", params={"q": "relogio", "page": 2}).text  # page 1 has it
    assert 'rel="prev" href="/?q=relogio&amp;page=1"' in next_to
    for query in ("relogio dourado", "RELÓGIO", " relogio "):  # the API as the page
        found = client.get("/", params={"q": query}).text
        assert "Relógio Dourado" in found, query
        listed = client.get("/api/products", params={"q": query}).json()["products"]
        assert "unico" in [p["product_id"] for p in listed], query


def grow_categories(store, sizes: dict[str, int]) -> None:
    """Add ``sizes[name]`` products to each new category ``name`` of ``store``: copies of its
    first product in name order (photo and vector), with ids ``name-0``, ``name-1``…"""
    import dataclasses
    import hashlib

    from vitrine.store import open_store
    from vitrine.store.base import Record

    handle = open_store(store)
    try:
        handle.lock_for_writing()
        first = handle.list_products(limit=1, offset=0)[0]
        vector = handle.vector(first.product_id)
        handle.upsert([Record(dataclasses.replace(first.to_product(category=name),
                                                  product_id=f"{name}-{i}"),
                              hashlib.sha256(f"{name}-{i}".encode()).hexdigest(), "0" * 16,
                              b"", vector)
                       for name, n in sizes.items() for i in range(n)])
    finally:
        handle.close()


OPTICS = "\u00f3tica"  # 'ótica' as a table saved by Excel spells it; a Mac's folder: 'o' + '\u0301'


@pytest.fixture(scope="module")
def crowded(settings, small_store, embedder, rows, tmp_path_factory):
    """A client over the small store (8 categories of 6) grown to CATEGORY_SELECT_MAX + 1
    categories: of 2 products (one of them OPTICS) up to CATEGORY_SELECT_MAX - 1, then two of
    one, 'm_um' and 'n_um' (a tie, the last by name); and the grown products' photo."""
    from vitrine.api import create_app
    from vitrine.store import open_store
    from vitrine.web.pages import CATEGORY_SELECT_MAX

    store = tmp_path_factory.mktemp("crowded") / "store"
    shutil.copytree(small_store, store)
    pairs = CATEGORY_SELECT_MAX - 1 - len({r["category"] for r in rows})
    grow_categories(store, {OPTICS: 2, **{f"extra_{i:03d}": 2 for i in range(pairs - 1)},
                            "m_um": 1, "n_um": 1})
    handle = open_store(store)
    photo = Path(handle.get("m_um-0").image).read_bytes()
    handle.close()
    app = create_app(settings.model_copy(update={"max_upload_bytes": 300_000}), store,
                     embedder=embedder)
    return TestClient(app), photo


def test_many_categories_are_typed_beside_the_largest(crowded, rows):
    """Past CATEGORY_SELECT_MAX categories the category fields are text fields suggesting the
    largest (20,000 options made each page 1.5 MB); a typed category filters as a chosen one,
    in either Unicode form, and one the store lacks finds nothing."""
    import unicodedata

    from vitrine.web.pages import CATEGORY_SELECT_MAX
    from vitrine.web.text import category_label

    client, photo = crowded
    sizes = {**{c: 6 for c in {r["category"] for r in rows}}, OPTICS: 2, "m_um": 1}
    sizes.update({f"extra_{i:03d}": 2 for i in range(CATEGORY_SELECT_MAX - len(sizes))})
    largest = sorted(sizes, key=lambda c: (-sizes[c], c))  # 'm_um' last, 'n_um' left out
    assert len(largest) == CATEGORY_SELECT_MAX and largest[-1] == "m_um"
    for path, field, counted in (("/", "category", True), ("/search", "search-category", False)):
        html = client.get(path).text
        assert f'<select id="{field}"' not in html and f'<label for="{field}">' in html
        assert (f'<input id="{field}" name="category" type="search" list="{field}-list" '
                f'value="" placeholder="Todas as categorias"') in html
        suggested = re.search(f'<datalist id="{field}-list">(.*?)</datalist>', html, re.S)
        options = re.findall(r'<option value="([^"]*)"(?: label="([^"]*)")?></option>',
                             suggested.group(1))
        # each written by the name the pages show (helper-216: the folder's name, after a
        # search by the shown one), which finds it again; named once: Chromium shows a
        # label beside the value, and "Relogio feminino (6)" repeated the name there
        assert [value for value, _ in options] == [category_label(c) for c in largest]
        assert [label for _, label in options] == [
            (f"{sizes[c]} produto" + ("s" if sizes[c] > 1 else "")) if counted else ""
            for c in largest]

    typed = client.get("/", params={"category": "n_um"}).text  # not suggested, but stored
    assert cards(typed) == 1 and "1 produto<" in typed and 'value="N um"' in typed
    assert card_categories(typed) == ["N um"]
    accent = client.get("/", params={"category": unicodedata.normalize("NFD", OPTICS)}).text
    assert cards(accent) == 2 and f'value="{category_label(OPTICS)}"' in accent
    for written in (" n_um ", "N UM", "N um"):  # spaces around, any case, the shown name
        typed = client.get("/", params={"category": written}).text
        assert card_categories(typed) == ["N um"] and 'value="N um"' in typed
    shown = client.post("/search", data={"category": f" {category_label(OPTICS).upper()}"},
                        files={"image": ("q.jpg", photo, "image/jpeg")}).text
    assert card_categories(shown) == [category_label(OPTICS)] * 2
    unknown = client.get("/", params={"category": "nada_assim"})
    assert unknown.status_code == 200 and cards(unknown.text) == 0
    assert "Não há categoria “<bdi>nada_assim</bdi>”." in unknown.text
    assert "parecidas" not in unknown.text
    assert 'value="nada_assim"' in unknown.text
    # without its accents, as a Brazilian shopper types it
    bare = client.get("/", params={"category": "N ÚM"}).text
    assert card_categories(bare) == ["N um"] and 'value="N um"' in bare
    # a part of several names: the largest that contain it (8, by name among equals), linked
    part = client.get("/", params={"category": "extra_01"}).text
    assert cards(part) == 0
    assert "Não há categoria “<bdi>extra_01</bdi>”. Categorias parecidas:" in part
    assert re.findall(r'<a href="/\?category=(extra_01\d)">Extra 01\d</a>', part) == [
        f"extra_01{i}" for i in range(8)]
    typo = client.get("/", params={"category": "n umm", "lang": "en"}).text  # a letter more
    assert "There is no category “<bdi>n umm</bdi>”. Similar categories:" in typo
    # "m um" and "n um" are both a letter from it (equal in size: by name)
    assert re.findall(r'<a href="/\?category=([^"&]+)&amp;lang=en">', typo) == ["m_um", "n_um"]

    found = client.post("/search", data={"category": "n_um"},
                        files={"image": ("q.jpg", photo, "image/jpeg")})
    assert found.status_code == 200 and card_categories(found.text) == ["N um"]
    assert 'list="search-category-list" value="N um"' in found.text  # the field keeps it
    fragment = client.post("/search", params={"fragment": 1},
                           data={"category": unicodedata.normalize("NFD", OPTICS)},
                           files={"image": ("q.jpg", photo, "image/jpeg")}).text
    assert card_categories(fragment) == [category_label(OPTICS)] * 2
    none = client.post("/search", data={"category": "nada_assim"},
                       files={"image": ("q.jpg", photo, "image/jpeg")})
    assert none.status_code == 200 and cards(none.text) == 0
    assert "Não há categoria “<bdi>nada_assim</bdi>”." in none.text
    near = client.post("/search", params={"fragment": 1}, data={"category": "extra_08"},
                       files={"image": ("q.jpg", photo, "image/jpeg")}).text
    assert ("Categorias parecidas: <bdi>Extra 080</bdi>, <bdi>Extra 081</bdi>, "
            "<bdi>Extra 082</bdi>, <bdi>Extra 083</bdi>, ") in near
    big = client.post("/search", headers={"Accept": "text/html"}, data={"category": "n_um"},
                      files={"image": ("big.jpg", b"x" * 300_001, "image/jpeg")})
    assert big.status_code == 413 and 'list="search-category-list" value="N um"' in big.text
    # a name the pages show for two categories is no way to either: those keep their own
    from vitrine.web.categories import category_names
    from vitrine.web.pages import typed_name

    stored = ["relogio_masculino", "relogio masculino", "Relógio", "relogio", OPTICS, "n_um"]
    names = category_names(dict.fromkeys(stored, 1))
    assert [typed_name(names, c) for c in stored] == [
        "relogio_masculino", "relogio masculino", "Relógio", "relogio", category_label(OPTICS),
        "N um"]


def test_a_category_named_with_spaces_around_it_has_its_page(settings, small_store, embedder,
                                                             tmp_path):
    """A category folder named "x_bolsa " (a stray space, as a Mac keeps it): the page's own
    option and the product page's link, which keep the space, and the name typed without
    it, all showed "There is no category" (the space was dropped before the store was
    asked, and neither its folded name nor its shown name matched)."""
    import html as html_text

    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    grow_categories(store, {"x_bolsa ": 2})
    client = TestClient(create_app(settings, store, embedder=embedder))
    product = client.get("/products/x_bolsa%20-0").text
    link = html_text.unescape(re.search(r'<p class="category"><a href="([^"]+)"', product)[1])
    assert link == "/?category=x_bolsa+"
    for page in (client.get(link), client.get("/", params={"category": "x_bolsa"})):
        assert cards(page.text) == 2 and 'value="x_bolsa " selected' in page.text
        assert "Não há categoria" not in page.text


def test_the_longest_category_a_store_takes_can_be_chosen(settings, small_store, embedder,
                                                          small_catalog, rows, tmp_path):
    """A category folder of 228 characters was indexed, listed and linked, but choosing it
    (the catalogue's filter, the product page's link, "Buscar em", the API) was a 422: the
    filters took 200 characters. They take what `index` takes (CATEGORY_MAX)."""
    import html as html_text

    from vitrine.api import create_app
    from vitrine.catalog import CATEGORY_MAX

    long = "relogio_" + "x" * (CATEGORY_MAX - len("relogio_"))
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    grow_categories(store, {long: 2})
    client = TestClient(create_app(settings, store, embedder=embedder))
    product = client.get(f"/products/{long}-0").text
    link = html_text.unescape(re.search(r'<p class="category"><a href="([^"]+)"', product)[1])
    catalogue = client.get(link)
    assert catalogue.status_code == 200 and cards(catalogue.text) == 2
    assert f'value="{long}" selected' in catalogue.text
    # the way back from a product opened there keeps the whole category
    back = client.get(f"/products/{long}-1", headers={"referer": str(catalogue.url)}).text
    assert f'<p class="breadcrumb"><a href="/?category={long}">' in back
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    found = client.post("/search", data={"category": long},
                        files={"image": ("q.jpg", photo, "image/jpeg")})
    assert found.status_code == 200 and len(card_categories(found.text)) == 2
    listed = client.get("/api/products", params={"category": long})
    assert listed.status_code == 200 and len(listed.json()["products"]) == 2
    assert client.get("/", params={"category": long + "x"}).status_code == 422


def test_a_query_parameter_named_path_is_kept_not_a_500(client, rows):
    """`/?path=x` (any page, and a page that is not there) was a 500, and for a browser the
    500 page crashed too, answered without the security headers: the language toggle's
    link passed each query parameter as a keyword to a function whose first parameter is
    named path (helper-209)."""
    product = f"/products/{rows[0]['product_id']}"
    for address, status in (("/", 200), ("/search", 200), (product, 200), ("/nope", 404)):
        for accept in ("*/*", "text/html"):
            page = client.get(address, params={"path": "x", "lang": "pt"},
                              headers={"Accept": accept})
            assert page.status_code == status, (address, accept, page.text)
            assert page.headers["x-content-type-options"] == "nosniff"
    assert 'href="/?path=x&amp;lang=en"' in client.get("/", params={"path": "x"}).text
    english = client.get("/search", params={"path": "/y", "lang": "en"}).text
    assert 'href="/search?path=%2Fy"' in english


def test_an_error_page_that_cannot_be_drawn_is_said_as_json(settings, small_store, embedder,
                                                             caplog):
    """A page's own error raised again drawing its error page (as `?path=x` did): the
    browser got the server's bare 500, without the security headers. The sentence comes as
    JSON then, and the failure goes to the log (helper-181)."""
    from vitrine.api import create_app

    app = create_app(settings, small_store, embedder=embedder)

    def broken(*args, **kwargs):
        raise RuntimeError("a template bug")

    app.state.render_error = broken
    client = TestClient(app, raise_server_exceptions=False)
    for address, status in (("/nope", 404), ("/products/none-such", 404)):
        page = client.get(address, headers={"Accept": "text/html"})
        assert page.status_code == status and page.json()["detail"], page.text
        assert page.headers["x-content-type-options"] == "nosniff"
    assert "the error page could not be drawn" in caplog.text


def test_a_referer_that_is_no_address_leads_to_the_first_page(client, rows):
    """A Referer urlsplit cannot read (`http://[::1`) made every product page a 500; it is
    read as no Referer: the way back leads to the catalogue's first page (helper-209)."""
    product = f"/products/{rows[0]['product_id']}"
    for referer in ("http://[::1", "http://[", "http://a]b/", "http://testserver[/?page=2"):
        page = client.get(product, headers={"Referer": referer})
        assert page.status_code == 200, (referer, page.text)
        assert '<p class="breadcrumb"><a href="/">' in page.text
    came = client.get(product, headers={"Referer": "http://testserver/?page=2"}).text
    assert '<p class="breadcrumb"><a href="/?page=2">' in came


def test_the_search_form_says_a_category_the_store_lacks(client):
    """/search?category=zzz (a link kept from a category since removed) showed "all
    categories" without a word, so the photo then searched every category."""
    from vitrine.web.text import category_label

    form = client.get("/search", params={"category": "salto_femininoo"}).text
    message = re.search(r'<p class="message">(.+?)</p>', form)[1]
    assert message.startswith(
        "Não há categoria “<bdi>salto_femininoo</bdi>”. Categorias parecidas: ")
    assert category_label("salto_feminino") in message
    assert "Não há categoria" not in client.get("/search",
                                                params={"category": "salto_feminino"}).text


def test_an_unknown_category_costs_little_in_a_store_of_many(settings, small_store, embedder,
                                                             rows, tmp_path, monkeypatch):
    """With 20,000 categories, `/?category=masculino feminino bolsa 1234` took 0.9 s of CPU
    (16 at once, 10 s, the server's one interpreter held): each request folded every
    category's names again and compared the typed one with each, letter by letter. The
    folded names are kept with the counts, and only the CLOSE_SPELLING_MAX largest are
    compared letter by letter (helper-209)."""
    import difflib

    from vitrine.api import create_app
    from vitrine.web import categories, pages

    store = tmp_path / "store"
    shutil.copytree(small_store, store)  # 8 categories of 6
    grow_categories(store, {"bolsa_grande": 3, "bolsa_pequena": 2,
                            **{f"extra_{i:02d}": 1 for i in range(30)}})
    monkeypatch.setattr(categories, "CLOSE_SPELLING_MAX", 12)
    folded: list[str] = []
    compared: list[list[str]] = []
    real_fold, real_close = pages.fold, difflib.get_close_matches
    for module in (pages, categories):
        monkeypatch.setattr(module, "fold", lambda text: folded.append(text) or real_fold(text))
    monkeypatch.setattr(categories.difflib, "get_close_matches", lambda word, names, n: (
        compared.append(list(names)) or real_close(word, names, n)))
    client = TestClient(create_app(settings, store, embedder=embedder))

    def near(page) -> list[str]:
        assert page.status_code == 200 and "Não há categoria" in page.text
        return re.findall(r'<a href="/\?category=([^"&]+)">', page.text.split(
            "Categorias parecidas:", 1)[-1].split("</p>", 1)[0])

    assert near(client.get("/", params={"category": "bolsa grandee"}))[0] == "bolsa_grande"
    folded.clear()
    # a letter wrong in a small category's name: only the 12 largest are compared with it
    # (8 of 6 products, 3, 2, and 'extra_00' and 'extra_01' of the 30 of 1, by name)
    largest = {*(r["category"] for r in rows), "bolsa_grande", "bolsa_pequena", "extra_00",
               "extra_01"}
    for typo in ("extra 2o", "extra_2o"):
        found = near(client.get("/", params={"category": typo}))
        assert found and set(found) <= largest, found  # (not 'extra_20' to 'extra_29')
    assert len(folded) <= 2 and all(len(names) == 12 for names in compared)
    assert {"bolsa grande", "extra 00", "extra 01"} < set(compared[-1])
    # found by a part of their names among all of them (the largest 8, by name)
    assert near(client.get("/", params={"category": "XTRA 2"})) == [
        f"extra_2{i}" for i in range(8)]


def test_a_store_at_the_limit_keeps_the_category_lists(settings, small_store, embedder, rows,
                                                       tmp_path):
    """CATEGORY_SELECT_MAX categories: both pages list them all (the catalogue with its
    counts), as before; one more and they are typed."""
    from vitrine.api import create_app
    from vitrine.web.pages import CATEGORY_SELECT_MAX
    from vitrine.web.text import category_label

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    real = sorted({r["category"] for r in rows})
    grow_categories(store, {f"extra_{i:03d}": 1 for i in range(CATEGORY_SELECT_MAX - len(real))})
    client = TestClient(create_app(settings, store, embedder=embedder))
    for path, field in (("/", "category"), ("/search", "search-category")):
        html = client.get(path, params={"category": real[0]}).text
        assert f'<select id="{field}" name="category">' in html and "<datalist" not in html
        options = re.findall(r'<option value="([^"]*)"( selected)?>', category_field(html))
        assert len(options) == CATEGORY_SELECT_MAX + 1 and options[0] == ("", "")
        assert (real[0], " selected") in options
    catalogue = client.get("/").text
    assert f'<option value="{real[0]}">{category_label(real[0])} (6)</option>' in catalogue
    assert '<option value="extra_000">Extra 000 (1)</option>' in catalogue

    grow_categories(store, {"one_more": 1})
    client = TestClient(create_app(settings, store, embedder=embedder))
    for path in ("/", "/search"):
        html = client.get(path).text
        assert f'<select id="{"search-" * (path != "/")}category"' not in html
        assert category_field(html).count("<option ") == CATEGORY_SELECT_MAX


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_socket_says_tcp():
    """asyncio turns Nagle's algorithm off (TCP_NODELAY) on accepted connections only when the
    listening socket's protocol is TCP; with protocol 0 each response waited ~40 ms for a
    delayed ACK."""
    from vitrine.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_a_host_is_bound_where_it_resolves_and_an_empty_one_is_refused(monkeypatch):
    """`--host ""` (a script's unset variable) listened on every address; a host name was
    bound as IPv4 whatever it resolved to ("[::1]" could not be bound). IPv4 first: a
    system listing ::1 first for localhost still listens on 127.0.0.1."""
    from vitrine.errors import VitrineError
    from vitrine.server import bind

    with pytest.raises(VitrineError, match="--host is empty"):
        bind(" ", 0)
    real = socket.getaddrinfo
    both = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: both
                        if host == "shop.local" else real(host, *a, **k))
    sock = bind("shop.local", 0)
    try:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "127.0.0.1"
        # its port in use there: said, not moved to ::1 (where checks of 127.0.0.1 miss it)
        port = sock.getsockname()[1]
        both[:] = [(f, t, p, c, (a[0], port, *a[2:])) for f, t, p, c, a in both]
        with pytest.raises(VitrineError, match="Address already in use"):
            bind("shop.local", port)
    finally:
        sock.close()
    with pytest.raises(VitrineError, match="cannot listen on no-such-host.invalid:0"):
        bind("no-such-host.invalid", 0)
    # a port given with the host was "cannot listen on 127.0.0.1:9000:0 (Name or service
    # not known)"; an IPv6 address is written in brackets before its port
    for host in ("127.0.0.1:9000", "localhost:80", "[::1]:8000", "localhost:"):
        with pytest.raises(VitrineError, match=re.escape(
                f"--host {host} holds a port; pass the address alone, and the port with "
                "--port.")):
            bind(host, 0)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1", 0, 0, 0))])
    with pytest.raises(VitrineError, match=r"^cannot listen on \[fe80::1\]:0 \("):
        bind("fe80::1", 0)


def test_serving_beyond_this_machine_is_said():
    """`serve --host 0.0.0.0` (or any address other machines reach) prints a note saying so
    and whether writes are open; loopback addresses say nothing."""
    from vitrine.server import exposure_note

    # loopback however written (it warned about 127.1, [::1], ::ffff:127.0.0.1, LOCALHOST)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST", "127.1", "[::1]",
                 "::ffff:127.0.0.1"):
        assert exposure_note(host, None) is None, host
    note = exposure_note("0.0.0.0", None)
    assert "0.0.0.0" in note and "other machines" in note and "refused" in note
    assert "bearer key" in exposure_note("::", "secret")
    assert exposure_note("shop.example", None) is not None
    # a host name is told by the address it was bound to (helper-162: a name the hosts file
    # gives 127.0.0.1 was said to let other machines in)
    assert exposure_note("vm", None, "127.0.0.1") is None
    assert exposure_note("vm6", None, "::1") is None
    assert "other machines" in exposure_note("shop.example", None, "192.0.2.7")


def test_a_short_api_key_is_said_to_be_guessable(settings):
    """Any key was taken, "a" too, while wrong keys are answered hundreds a second
    (helper-238): a key shorter than 16 characters gets a note at the start, naming how to
    make one; a long one none."""
    from vitrine.cli_support import api_key_note

    for key, length in (("a", "1 character long"), ("s3cret-key", "10 characters long")):
        note = api_key_note(settings.model_copy(update={"api_key": key}))
        assert note.startswith(f"note: VITRINE_API_KEY is {length}, which whoever can reach")
        assert "secrets.token_urlsafe(24)" in note
    assert api_key_note(settings.model_copy(update={"api_key": "x" * 16})) is None
    assert api_key_note(settings.model_copy(update={"api_key": None})) is None


def test_serve_command_and_busy_port(small_store, weights_path, small_catalog, tmp_path):
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    # a key of spaces is no key (every write refused): said at the start (helper-230)
    proc = subprocess.Popen([*CLI, "serve", "--store", str(small_store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "VITRINE_API_KEY": "   "})
    try:
        assert proc.stdout.readline() == (
            "note: VITRINE_API_KEY is blank, so writes through the API stay refused; set it "
            "to the key clients send.\n")
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line
        base = match.group(1)
        health = healthz_when_up(base)
        assert health.json()["products"] == 48
        port = int(base.rsplit(":", 1)[1])

        busy = subprocess.run([*CLI, "serve", "--store", str(small_store), "--port",
                               str(port)], capture_output=True, text=True, env=env,
                              timeout=120)
        assert busy.returncode == 2 and "cannot listen on 127.0.0.1:" in busy.stderr
        assert len(busy.stderr.strip().splitlines()) == 1
        # the demo checks the port before spending time on indexing
        demo = subprocess.run([*CLI, "demo", "--catalog", str(small_catalog), "--store",
                               str(tmp_path / "demo-store"), "--port", str(port)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert demo.returncode == 2 and "--port" in demo.stderr
        assert not (tmp_path / "demo-store").exists()
    finally:  # Ctrl+C twice, as an impatient user does: the second one stops it at once
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    # a clean stop (the second, cancelling the server's tasks, printed their traceback)
    assert proc.returncode in (0, 130) and "Traceback" not in rest, rest


def test_serve_goes_on_quietly_when_its_output_is_no_longer_read(small_store, weights_path):
    """helper-158: a script that read the server's address and closed its end of the pipe
    (`vitrine serve | head -1`) had every request print a 110-line traceback on stderr (the
    access log failing to write). The server serves on; stderr stays quiet."""
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen([*CLI, "serve", "--store", str(small_store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout.readline()).group(1)
        proc.stdout.close()  # (the reader is gone)
        deadline = time.monotonic() + 60
        answers = []
        while len(answers) < 4:
            try:
                answers.append(httpx2.get(base + "/healthz", timeout=5).status_code)
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.2)
        assert answers == [200] * 4
    finally:
        proc.send_signal(signal.SIGTERM)
        _, said = proc.communicate(timeout=30)
    assert "Traceback" not in said and "Logging error" not in said, said


def test_serve_stops_gracefully_when_its_terminal_closes(small_store, weights_path):
    """SIGHUP (the terminal closed, an ssh session dropped) reached uvicorn's loop as the
    command's KeyboardInterrupt: a traceback. The server now shuts down as on SIGTERM, then
    the process ends by the signal."""
    from test_cli_contract import hangs_up

    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen(hangs_up([*CLI, "serve", "--store", str(small_store), "--port",
                                      "0"]), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout.readline()).group(1)
        assert healthz_when_up(base).status_code == 200
    finally:
        proc.send_signal(signal.SIGHUP)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGHUP, rest
    assert "Traceback" not in rest and "Application shutdown complete" in rest
    assert rest.rstrip().endswith("terminated.")


def test_large_counts_and_page_numbers_are_grouped_per_language(settings, small_store,
                                                                embedder, tmp_path):
    """"24.058 produtos", "Página 1.000 de 1.003" and "(24.010)" in Portuguese, "24,058",
    "1,000 of 1,003" in English (they read "24058 produtos", "Página 1000 de 1003")."""
    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    grow_categories(store, {"muitos": 24_010})  # 48 + 24,010: 1,003 pages of 24
    client = TestClient(create_app(settings, store, embedder=embedder))
    pt = client.get("/", params={"page": 1000}).text
    assert "24.058 produtos" in pt and "Página 1.000 de 1.003" in pt
    assert "<title>Catálogo · Página 1.000 · Vitrine</title>" in pt
    assert re.search(r'<option value="muitos"[^>]*>Muitos \(24\.010\)</option>', pt)
    en = client.get("/", params={"page": 1000, "lang": "en"}).text
    assert "24,058 products" in en and "Page 1,000 of 1,003" in en
    assert re.search(r'<option value="muitos"[^>]*>Muitos \(24,010\)</option>', en)


def test_an_access_log_that_cannot_be_written_is_said_once_and_dropped(monkeypatch, capsys):
    """helper-163: a full disk under the access log was silenced without a word (a reader
    gone, EPIPE, is left quietly); other logging failures are reported as logging does."""
    import errno as errnos
    import logging

    from vitrine import server

    dropped = []
    monkeypatch.setattr(server, "stdout_to_null", lambda: dropped.append(1))
    handler = logging.StreamHandler()
    failed = server._access_log_failed(handler)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "GET /", (), None)
    for code in (errnos.ENOSPC, errnos.EPIPE):
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            failed(record)
    assert dropped == [1, 1]
    said = capsys.readouterr().err
    assert said == ("note: the access log cannot be written (No space left on device); it "
                    "is discarded from now on.\n")
    try:
        raise ValueError("a format that does not fit its arguments")
    except ValueError:
        failed(record)  # (logging's own report: a traceback on stderr)
    assert dropped == [1, 1] and "ValueError" in capsys.readouterr().err


ROOT = "/vitrine"
LINK_ATTRIBUTES = ("href", "src", "action", "formaction")


def site_links(html: str) -> list[str]:
    """Every site-relative address the page's HTML names (``href``, ``src``, ``action``,
    ``formaction`` and the script's ``data-…-url``): those starting with one '/'."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if value and (name in LINK_ATTRIBUTES or name.startswith("data-")
                              and name.endswith("-url")):
                    found.append(value)

    Links().feed(html)
    return [link for link in found if link.startswith("/") and not link.startswith("//")]


@pytest.fixture(scope="module")
def prefixed(settings, small_store, embedder) -> TestClient:
    """The app served under /vitrine by a reverse proxy that strips the prefix."""
    from vitrine.api import create_app

    return TestClient(create_app(settings.model_copy(update={"root_path": ROOT}), small_store,
                                 embedder=embedder), raise_server_exceptions=False)


def root_pages(client: TestClient, rows, small_catalog) -> dict[str, tuple[int, str]]:
    """The pages a shopper sees, each (status, HTML), asked at the app's own paths (the
    proxy strips the prefix)."""
    row = rows[12]
    photo = (small_catalog / rows[40]["image"]).read_bytes()
    html = {"Accept": "text/html"}
    asked = {
        "catalogue": client.get("/"),
        "category": client.get("/", params={"category": row["category"], "page": 1}),
        "english": client.get("/", params={"lang": "en", "q": "a"}),
        "product": client.get(f"/products/{row['product_id']}",
                              headers={"Referer": f"https://testserver{ROOT}/?page=2"}),
        "search": client.get("/search", params={"category": row["category"]}),
        "results": client.post("/search", params={"lang": "en"}, headers=html,
                               files={"image": ("q.jpg", photo, "image/jpeg")}),
        "fragment": client.post("/search", params={"fragment": 1}, headers=html,
                                files={"image": ("q.jpg", photo, "image/jpeg")}),
        "not found": client.get("/nope", headers=html),
        "no product": client.get("/products/none-such", headers=html),
        "too large": client.post("/search", headers={**html, "Content-Length": "99999999999"},
                                 content=b""),
    }
    return {name: (page.status_code, page.text) for name, page in asked.items()}


def test_under_a_path_prefix_every_address_a_page_writes_starts_with_it(prefixed, rows,
                                                                        small_catalog):
    """Behind a reverse proxy serving Vitrine at https://shop.example/vitrine/ (the prefix
    stripped on the way in, VITRINE_ROOT_PATH=/vitrine), every link, photo, style sheet,
    script and form of the pages named the site's root, and left Vitrine."""
    pages = root_pages(prefixed, rows, small_catalog)
    assert [pages[name][0] for name in pages] == [200, 200, 200, 200, 200, 200, 200, 404, 404,
                                                  413], pages
    every: list[str] = []
    for name, (_, html) in pages.items():
        links = site_links(html)
        assert links, name
        outside = [link for link in links if link != ROOT and not link.startswith(ROOT + "/")]
        assert outside == [], (name, outside)
        every += links
    for kind in ("/static/style.css", "/static/app.js", "/static/filters.js",
                 "/static/carry.js", "/static/favicon.svg", "/images/",
                 "/products/", "/search", "/?lang=en", "/?category="):
        assert any(link.startswith(ROOT + kind) for link in every), kind
    # the form's own address, and the one the script sends a photo to (taken from the page)
    search = pages["search"][1]
    assert f'action="{ROOT}/search?category=' in search
    assert f'data-fragment-url="{ROOT}/search?fragment=1"' in search
    assert f'<form class="filters" method="get" action="{ROOT}/" role="search">' \
        in pages["catalogue"][1]
    # the way back reads the Referer under the prefix
    assert f'<p class="breadcrumb"><a href="{ROOT}/?page=2">' in pages["product"][1]
    # what the links name is served (the proxy strips the prefix)
    for link in ("/static/app.js", "/static/filters.js", "/static/carry.js", "/static/style.css",
                 re.search(rf'src="{ROOT}(/images/[^"]+)"', pages["catalogue"][1]).group(1)):
        assert prefixed.get(link).status_code == 200, link


def test_under_a_path_prefix_the_way_back_and_the_api_docs_keep_it(prefixed, client, rows):
    """The way back to the catalogue page the shopper came from compares the Referer's path
    without the prefix; /docs loads the OpenAPI document from under it, and the API's photo
    addresses start with it."""
    product = f"/products/{rows[0]['product_id']}"
    for referer, back in ((f"https://testserver{ROOT}/?category=x", f"{ROOT}/?category=x"),
                          (f"https://testserver{ROOT}/?category=x&page=3&q=a+b",
                           f"{ROOT}/?category=x&amp;q=a+b&amp;page=3"),
                          ("https://testserver/?category=x", f"{ROOT}/"),  # (not Vitrine's)
                          (f"https://elsewhere.example{ROOT}/?category=x", f"{ROOT}/"),
                          (f"https://testserver{ROOT}/products/1", f"{ROOT}/")):
        page = prefixed.get(product, headers={"Referer": referer})
        assert f'<p class="breadcrumb"><a href="{back}">' in page.text, referer
    came = prefixed.get(product, headers={"Referer": f"https://testserver{ROOT}/?category=x"})
    assert re.search(rf'href="{ROOT}/products/[^"]+\?back=category%3Dx"', came.text)
    docs = prefixed.get("/docs")
    assert docs.status_code == 200 and f"'{ROOT}/openapi.json'" in docs.text
    schema = prefixed.get("/openapi.json").json()
    assert schema["servers"] == [{"url": ROOT}]
    listed = prefixed.get("/api/products", params={"limit": 2}).json()["products"]
    assert listed and all(p["image_url"].startswith(ROOT + "/images/") for p in listed)
    # without the setting: as before, nothing names a prefix
    docs = client.get("/docs").text
    assert "'/openapi.json'" in docs and ROOT not in docs
    assert "servers" not in client.get("/openapi.json").json()
    listed = client.get("/api/products", params={"limit": 2}).json()["products"]
    assert all(p["image_url"].startswith("/images/") for p in listed)


def test_without_a_path_prefix_no_page_names_one(client, rows, small_catalog):
    pages = root_pages(client, rows, small_catalog)
    for name, (_, html) in pages.items():
        assert ROOT not in html, name
        assert all(link.startswith("/") for link in site_links(html)), name
    assert '<p class="breadcrumb"><a href="/">' in pages["product"][1]  # (another address)


@pytest.mark.parametrize("value", ["vitrine", "/vitrine/", "/", "//shop.example",
                                   "/a b", "/a?b", "/a#b", "/a\\b", "/loj\u00e1", "/..",
                                   "/shop/./x", "/a'b", '/a"b', "/a<b", "/a%2Fb"])
def test_a_root_path_that_is_no_path_prefix_is_refused(monkeypatch, value):
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_ROOT_PATH", value)
    with pytest.raises(VitrineError, match=r"^setting VITRINE_ROOT_PATH=.*: write a path "
                                           r"such as /vitrine or /shop/vitrine: .*\.$"):
        load_settings()


def test_a_prefix_named_as_the_apps_own_paths_and_a_request_still_carrying_it(
        settings, small_store, embedder, rows):
    """The prefix was left out of the scope's path, which Starlette's routing strips it
    from: a prefix named as one of the app's own paths (/search, /products, /images,
    /static, /api) made that whole part of the site a 404; and a request still carrying the
    prefix (no proxy before it, or one that does not strip it) was served, its page's links
    doubling the prefix, an upload without a key read whole before its 401 (helper-229).
    Each is at its own address now, and a request carrying the prefix is a 404."""
    from vitrine.api import create_app

    pid = rows[3]["product_id"]
    for prefix in ("/search", "/products", "/images", "/static", "/api", "/shop/vitrine"):
        client = TestClient(create_app(settings.model_copy(update={"root_path": prefix}),
                                       small_store, embedder=embedder))
        for path in ("/search", f"/products/{pid}", f"/images/{pid}", "/static/app.js",
                     f"/api/products/{pid}", "/", "/healthz"):
            assert client.get(path).status_code == 200, (prefix, path)
        client.close()
    client = TestClient(create_app(settings.model_copy(update={"root_path": ROOT,
                                                               "api_key": "k"}),
                                   small_store, embedder=embedder))
    assert client.get(ROOT + f"/products/{pid}").status_code == 404
    assert client.get(ROOT + "/static/app.js").status_code == 404
    refused = client.post(ROOT + "/api/products", content=b"x" * 100)
    assert refused.status_code == 404
    page = client.get(f"/products/{pid}", params={"lang": "en"}).text
    assert f'href="{ROOT}/products/' in page and ROOT + ROOT not in page
    client.close()


def test_the_demo_serves_at_its_own_address_without_a_prefix(settings, small_catalog,
                                                             monkeypatch, tmp_path,
                                                             sketched_demo_figures):
    """The demo serves with no proxy before it: VITRINE_ROOT_PATH made every link of its
    pages a 404 (helper-229)."""
    import socket

    from rich.console import Console

    import vitrine.api
    from vitrine.demo import run_demo

    served = []

    class Served(Exception):
        pass

    def create_app(settings, *args, **kwargs):
        served.append(settings.root_path)
        raise Served

    monkeypatch.setattr(vitrine.api, "create_app", create_app)
    told = settings.model_copy(update={"root_path": ROOT, "demo_train": False})
    with socket.socket() as sock, pytest.raises(Served):
        run_demo(copy_subset(small_catalog, tmp_path / "catalog", 1), tmp_path / "store",
                 tmp_path / "out", told, 3, console=Console(quiet=True), serve=sock)
    assert served == [""]


def test_serve_takes_the_root_path_from_its_flag_or_the_setting(monkeypatch, tmp_path):
    """`vitrine serve --root-path /vitrine` (over VITRINE_ROOT_PATH) reaches the app; a bad
    one is one sentence, before the model loads."""
    from typer.testing import CliRunner

    import vitrine.api
    from vitrine.cli import app

    made: list[str] = []

    class Made(Exception):
        pass

    def create_app(settings, store, **kwargs):
        made.append(settings.root_path)
        raise Made

    monkeypatch.setattr(vitrine.api, "create_app", create_app)
    monkeypatch.setenv("VITRINE_ROOT_PATH", "/shop")
    runner = CliRunner()
    for args, expected in ((["--root-path", ROOT], ROOT), ([], "/shop"),
                           (["--root-path", ""], "")):
        result = runner.invoke(app, ["serve", "--store", str(tmp_path), "--port", "0", *args])
        assert isinstance(result.exception, Made), result.output
        assert made.pop() == expected
    result = runner.invoke(app, ["serve", "--store", str(tmp_path), "--port", "0",
                                 "--root-path", "vitrine/"])
    assert made == [] and "--root-path 'vitrine/': write a path such as /vitrine" \
        in str(result.exception), result.output


def test_a_server_behind_a_prefix_says_where_its_pages_open(monkeypatch, tmp_path):
    """Its pages work through the proxy only (their links, styles and /docs' description
    start with the prefix): the address printed alone led to pages without their styles and
    a /docs that failed (helper-221)."""
    from typer.testing import CliRunner

    import vitrine.api
    import vitrine.server
    from vitrine.cli import app

    monkeypatch.delenv("VITRINE_ROOT_PATH", raising=False)
    monkeypatch.setattr(vitrine.api, "create_app", lambda settings, store, **kw: object())
    monkeypatch.setattr(vitrine.server, "serve", lambda app_, sock, on_ready: on_ready(
        "http://127.0.0.1:8245"))
    runner = CliRunner()
    for args, docs in ((["--root-path", ROOT], f"docs: {ROOT}/docs"),
                       ([], "docs: http://127.0.0.1:8245/docs")):
        said = runner.invoke(app, ["serve", "--store", str(tmp_path), "--port", "0", *args])
        assert said.exit_code == 0, said.output
        assert docs in said.output and ("proxy" in said.output) == bool(args), said.output
        # (/docs draws with Swagger UI from its CDN: blank without internet access)
        offline = f"offline: {ROOT if args else 'http://127.0.0.1:8245'}/openapi.json"
        assert offline in " ".join(said.output.split()), said.output


def test_the_category_field_lists_categories_as_a_reader_orders_them():
    """By the names the pages show, without case or accents: the store's code-point order
    put "anel", "Ímã" and "Óculos" after "Zíper" (helper-222); the suggestions of a typed
    field, most products first, break ties so too."""
    from vitrine.web.pages import CATEGORY_SELECT_MAX, category_choices

    counts = {"Bolsa": 3, "Camisa": 1, "Zíper": 2, "anel": 5, "relogio_feminino": 1,
              "Ímã": 1, "Óculos": 2, "": 4}
    field = category_choices(counts)
    assert list(field["categories"]) == ["anel", "Bolsa", "Camisa", "Ímã", "Óculos",
                                         "relogio_feminino", "Zíper"]
    assert field["categories"]["anel"] == 5 and not field["category_typed"]
    many = {**counts, **{f"z{i:05d}": 1 for i in range(CATEGORY_SELECT_MAX)}}
    typed = category_choices(many)
    assert typed["category_typed"]
    assert list(typed["categories"])[:6] == ["anel", "Bolsa", "Óculos", "Zíper", "Camisa",
                                             "Ímã"]


def test_a_category_lists_names_as_a_reader_sorts_them(settings, small_store, embedder,
                                                       tmp_path):
    """A Portuguese shop's names, on the category's page and the API's pages, in the order a
    reader expects (case and accents aside: by code point "Zíper" came before "anel" and
    "Échappe", "Óculos" after all), each product once page after page (``has_more``)."""
    import dataclasses
    import hashlib

    from vitrine.api import create_app
    from vitrine.store import open_store
    from vitrine.store.base import Record

    names = ["Óculos escuros", "Zíper dourado", "anel de prata", "Bolsa de couro", "Échappe"]
    shutil.copytree(small_store, tmp_path / "store")
    handle = open_store(tmp_path / "store")
    try:
        handle.lock_for_writing()
        first = handle.list_products(limit=1, offset=0)[0]
        vector = handle.vector(first.product_id)
        handle.upsert([Record(dataclasses.replace(first.to_product(category="acessorios"),
                                                  product_id=f"ac-{i}", name=name),
                              hashlib.sha256(name.encode()).hexdigest(), "0" * 16, b"", vector)
                       for i, name in enumerate(names)])
    finally:
        handle.close()
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    want = ["anel de prata", "Bolsa de couro", "Échappe", "Óculos escuros", "Zíper dourado"]
    page = client.get("/", params={"category": "acessorios"}).text
    assert re.findall(r'<span class="card-title">([^<]+)</span>', page) == [
        html_escape(name) for name in want]
    listed, offset = [], 0
    while True:
        got = client.get("/api/products", params={"category": "acessorios", "limit": 2,
                                                  "offset": offset}).json()
        listed += [p["name"] for p in got["products"]]
        offset += 2
        if not got["has_more"]:
            break
    assert listed == want and offset == 6


def test_the_results_block_is_marked_as_the_servers_own(client, rows, small_catalog):
    """The block the page's script puts in place carries a header of its own: an HTML answer
    without it (a reverse proxy's 502 page) is said as a failure, not shown as results."""
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    for image, status in ((photo, 200), (b"not a photo", 400)):
        fragment = client.post("/search", params={"fragment": 1},
                               files={"image": ("q.jpg", image, "image/jpeg")})
        assert fragment.status_code == status
        assert fragment.headers.get("Vitrine-Fragment") == "results"
    whole = client.post("/search", files={"image": ("q.jpg", photo, "image/jpeg")})
    assert "Vitrine-Fragment" not in whole.headers


def test_the_readmes_nginx_recipe_lets_a_phone_photo_through():
    """nginx refuses a request body over 1 MB unless told otherwise: behind the README's
    recipe as written, a 2 MB phone photo got nginx's 413, which the page said as 'too large
    (limit 10 MB)'. The recipe lets the upload limit and the form's overhead through."""
    from conftest import ROOT

    from vitrine.config import Settings
    from vitrine.web.guards import MULTIPART_OVERHEAD

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = re.search(r"nginx: `(location [^`]*proxy_pass[^`]*)`", readme)
    assert recipe, "the README's nginx recipe"
    size = re.search(r"client_max_body_size (\d+)([km]?);", recipe[1])
    assert size, recipe[1]
    allowed = int(size[1]) * {"": 1, "k": 1024, "m": 1024 ** 2}[size[2]]
    assert allowed >= Settings.model_fields["max_upload_bytes"].default + MULTIPART_OVERHEAD


def test_a_write_folds_only_the_new_category_names(monkeypatch):
    """After a write the pages derive what a typed category is compared with from the new
    counts; every category's name was folded again (three times each: 1.3 s of the
    interpreter at 60,000 categories, every page waiting behind it). Only a new one is."""
    import vitrine.catalog_categories
    import vitrine.web.categories
    from vitrine.catalog import categories_by_key
    from vitrine.web.categories import category_names

    counts = {f"Relógio_{i:04d}": i % 7 + 1 for i in range(500)}
    before = category_names(counts), categories_by_key(counts)
    folded = []
    for module in (vitrine.catalog_categories, vitrine.web.categories):
        monkeypatch.setattr(module, "fold", lambda text, real=module.fold: (
            folded.append(text), real(text))[1])
    counts["Calçado_novo"] = 1
    names, keyed = category_names(counts), categories_by_key(counts)
    assert len(folded) == 3 and "Calçado_novo" in folded
    assert names.forms[:-1] == before[0].forms and keyed["calcado novo"] == ["Calçado_novo"]
    assert names.named["relogio_0001"] == ["Relógio_0001"]


@pytest.mark.parametrize("score, shown", [(-0.3, 0), (-0.0, 0), (0.004, 0), (0.456, 46),
                                          (0.995, 100), (1.000009, 100)])
def test_a_cards_similarity_is_a_whole_percentage_from_0_to_100(score, shown):
    """A card's score is the cosine as a whole percentage: a negative cosine (a trained
    model's vectors can point apart) shows 0 %, never "-30 %", beside its meter at empty; an
    fp16 score a hair over 1 shows 100 %."""
    from vitrine.web.text import percent

    assert percent(score) == shown


def test_typed_category_filters_are_not_kept(client):
    """The folded names kept are the store's: every category filter a client typed was kept
    too (up to 131,072 of them, 801 MB of 512 characters each, for as long as the server
    ran)."""
    import vitrine.catalog

    def kept() -> int:
        return sum(f.cache_info().currsize for f in vars(vitrine.catalog).values()
                   if hasattr(f, "cache_info"))

    client.get("/", params={"category": "warm-up"})
    before = kept()
    for i in range(20):
        assert client.get("/", params={"category": f"typed {i} " + "x" * 400}).status_code \
            == 200
    assert kept() == before


def test_stored_category_names_cannot_turn_a_sentence_around(client, settings, small_store,
                                                             small_catalog, embedder, tmp_path,
                                                             monkeypatch):
    """A category name said inside a sentence is isolated (bdi), as the typed one of "Não
    há categoria" is: a right-to-left name (or an override, U+202E) in the photo search's
    category guess drew the rest of the sentence, "(91% de probabilidade).", backwards, and
    in the list of similar categories turned the names after it around (helper-345)."""
    from vitrine.api import create_app
    from vitrine.embed import CategoryGuess
    from vitrine.service import VitrineService

    turned, other = "\u202eorcim", "\u202eotro"
    real = VitrineService.search_photo
    guesses = [CategoryGuess(turned, 0.91, other, 0.05, True),
               CategoryGuess(turned, 0.48, other, 0.4, False)]

    def with_guess(self, data, k, category=None, **kwargs):
        matches, timings, _ = real(self, data, k, category, **kwargs)
        return matches, timings, guesses[0]

    monkeypatch.setattr(VitrineService, "search_photo", with_guess)
    photo = next(small_catalog.rglob("*.jpg")).read_bytes()
    for guess in list(guesses):
        guesses[0] = guess
        for params in ({}, {"fragment": 1, "lang": "en"}):
            page = client.post("/search", params=params,
                               files={"image": ("q.jpg", photo, "image/jpeg")}).text
            said = re.search(r'<p class="guess[^"]*">(.+?)</p>', page)[1]
            assert f"<bdi>{turned}</bdi>" in said, said
            assert (f"<bdi>{other}</bdi>" in said) == (not guess.sure), said

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    grow_categories(store, {f"{turned}_a": 1, f"{turned}_b": 1})
    own = TestClient(create_app(settings, store, embedder=embedder))
    for path in ("/", "/search"):
        page = own.get(path, params={"category": "orcim"}).text
        near = page.split("Categorias parecidas:", 1)[1].split("</p>", 1)[0]
        names = re.findall(r"<bdi>(.*?)</bdi>", near)
        assert len(names) == 2 and all(turned in name for name in names), near


def healthz_when_up(base: str):
    """``base``'s /healthz answer once a started `vitrine serve` answers (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return httpx2.get(base + "/healthz", timeout=5)
        except httpx2.TransportError:
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
