"""The REST API, end to end with the real model on the small demo store: every endpoint, every
error code, the security headers, and 8 concurrent clients against a real uvicorn server."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
from conftest import IN_CI, loafer, phone_screenshot
from fastapi.testclient import TestClient
from PIL import Image

KEY = "s3cret-key"
LIMIT = 300_000
RESULT_KEYS = {"product_id", "name", "category", "score", "price", "description", "image_url",
               "same_photo"}


def _rows(catalog: Path) -> list[dict]:
    with open(catalog / "products.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _app(settings, store: Path, embedder, **changes):
    from vitrine.api import create_app

    return create_app(settings.model_copy(update=changes), store, embedder=embedder)


@pytest.fixture(scope="module")
def rows(small_catalog) -> list[dict]:
    return _rows(small_catalog)


@pytest.fixture(scope="module")
def client(settings, small_store, embedder) -> TestClient:
    """A read-only app over the shared store; uploads limited to 300 kB; no API key."""
    return TestClient(_app(settings, small_store, embedder, max_upload_bytes=LIMIT))


@pytest.fixture()
def writable(settings, small_store, embedder, tmp_path):
    """An app with an API key over a private copy of the store."""
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    return TestClient(_app(settings, store, embedder, api_key=KEY)), store


def _jpeg(path: Path, *, flip: bool = False) -> bytes:
    """A photo's JPEG bytes; ``flip`` makes a mirrored copy that no stored file matches."""
    img = Image.open(path).convert("RGB")
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _upload(data: bytes, name: str = "photo.jpg") -> dict:
    return {"image": (name, data, "image/jpeg")}


def test_health_docs_and_security_headers(client):
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "products": 48, "model": "mobilenet_v2"}
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert "access-control-allow-origin" not in r.headers  # CORS closed by default
    pre = client.options("/api/search", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers

    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/api/products", "/api/products/{product_id}",
            "/api/products/{product_id}/similar", "/api/search",
            "/images/{product_id}"} <= set(paths)
    assert set(paths["/api/products"]) == {"get", "post"}
    assert "delete" in paths["/api/products/{product_id}"]
    # what a client generator reads: every error a {"detail": sentence} (a 422 was said to
    # be a list of validation errors), each route's statuses, and the writes' key as bearer
    # authentication (a header parameter named Authorization, which OpenAPI ignores)
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    assert spec["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer",
                       "description": "The server's VITRINE_API_KEY."}}
    for path, method, statuses in (("/api/products", "get", {"200", "422", "503"}),
                                   ("/api/products", "post", {"200", "201", "400", "401",
                                                              "403", "409", "413", "422", "503"}),
                                   ("/api/products/{product_id}", "delete",
                                    {"200", "204", "401", "403", "404", "409", "422",
                                     "503"}),
                                   ("/api/products/{product_id}", "patch",
                                    {"200", "401", "403", "404", "409", "413", "422", "503"}),
                                   ("/images/{product_id}", "get",  # (no-cache, Range)
                                    {"200", "206", "304", "404", "416", "422", "503"}),
                                   ("/api/search", "post", {"200", "400", "413", "422", "503"}),
                                   ("/healthz", "get", {"200", "503"})):
        operation = spec["paths"][path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        assert ("security" in operation) == (method in ("post", "delete", "patch")
                                             and "products" in path)
        assert all("parameters" not in operation or p["name"].lower() != "authorization"
                   for p in operation.get("parameters", []))
    # a write's 200 is the product, or (the server stopping after the change) SavedOut
    product_or_saved = [{"$ref": "#/components/schemas/ProductOut"},
                        {"$ref": "#/components/schemas/SavedOut"}]
    for method in ("post", "patch"):
        path = "/api/products" + ("" if method == "post" else "/{product_id}")
        assert spec["paths"][path][method]["responses"]["200"]["content"][
            "application/json"]["schema"]["anyOf"] == product_or_saved
    assert spec["paths"]["/api/products/{product_id}"]["delete"]["responses"]["200"][
        "content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SavedOut"}
    # what a generated client (openapi-python-client) names and sends: functions by the
    # routes' names (not `search_api_search_post`), the photo as a file (a contentMediaType
    # alone was sent as a text field: a 422 "send a file there"), a photo answer as bytes
    # (without a schema, a photo was an unexpected status); helper-221
    ids = sorted(op["operationId"] for ops in paths.values() for op in ops.values())
    assert ids == sorted(["healthz", "product_image", "list_products", "add_product",
                          "get_product", "edit_product", "delete_product", "similar",
                          "search"])
    schemas = spec["components"]["schemas"]
    for body in ("Body_search", "Body_add_product"):
        assert schemas[body]["properties"]["image"]["format"] == "binary"
    photo = spec["paths"]["/images/{product_id}"]["get"]["responses"]
    for status in ("200", "206"):
        assert photo[status]["content"]["image/*"]["schema"] == {"type": "string",
                                                                 "format": "binary"}
    # an unknown id is repeated up to 200 characters (a 70,000-character one came back)
    for address in ("/api/products/{}", "/api/products/{}/similar", "/images/{}"):
        gone = client.get(address.format("x" * 5000))
        assert gone.status_code == 404 and len(gone.text) < 300, address
        assert "'" + "x" * 200 + "…'" in gone.json()["detail"]


def test_405_names_every_method_of_the_address_and_head_answers_like_get(writable, rows):
    client = writable[0]
    pid = rows[0]["product_id"]
    addresses = ["/api/products", f"/api/products/{pid}", f"/api/products/{pid}/similar",
                 "/api/search", "/healthz", f"/images/{pid}", "/", "/search",
                 f"/products/{pid}"]
    for path in addresses:
        refused = client.put(path, headers={"Authorization": f"Bearer {KEY}"})
        assert refused.status_code == 405, path
        allowed = refused.headers["allow"].split(", ")
        for method in allowed:  # each method named works there (or refuses the empty request)
            assert client.request(method, path).status_code != 405, (path, method)
        if "GET" in allowed:
            assert "HEAD" in allowed, path
            got, head = client.get(path), client.head(path)
            assert head.status_code == got.status_code == 200 and head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
    assert set(client.put("/api/products").headers["allow"].split(", ")) == {
        "GET", "HEAD", "POST"}
    assert set(client.put(f"/api/products/{pid}").headers["allow"].split(", ")) == {
        "GET", "HEAD", "PATCH", "DELETE"}
    # (not those of /api/products/{id} matched with "…/similar" as the id, no product's)
    assert set(client.put(f"/api/products/{pid}/similar").headers["allow"].split(", ")) == {
        "GET", "HEAD"}
    # without a key, a method or an address that no key makes work gets its 405 or 404,
    # not a 401 asking for the key (every POST, PATCH or DELETE under /api/products did)
    for method, path, status in (("POST", f"/api/products/{pid}", 405),
                                 ("DELETE", "/api/products", 405),
                                 ("PATCH", "/api/products", 405),
                                 ("POST", f"/api/products/{pid}/similar", 405),
                                 # (not a 404 for a product "{pid}/similar", no product's id)
                                 ("PATCH", f"/api/products/{pid}/similar", 405),
                                 ("DELETE", f"/api/products/{pid}/similar", 405),
                                 ("POST", "/api/productsX", 404),
                                 ("DELETE", "/api/products-old/1", 404)):
        answer = client.request(method, path)
        assert answer.status_code == status, (method, path, answer.json())
    for method, path in (("POST", "/api/products"), ("PATCH", f"/api/products/{pid}"),
                         ("DELETE", f"/api/products/{pid}"), ("PATCH", "/api/products/")):
        assert client.request(method, path).status_code == 401, (method, path)
    static = client.put("/static/app.js")  # a mount: Starlette's own Allow stands
    assert static.status_code == 405 and static.headers["allow"] == "GET, HEAD"
    page = client.put("/search", headers={"Accept": "text/html"})  # the error page says it too
    assert page.status_code == 405 and "POST" in page.headers["allow"]


def test_list_products_filters_and_pages(client, rows):
    first = client.get("/api/products", params={"limit": 5}).json()
    second = client.get("/api/products", params={"limit": 5, "offset": 5}).json()
    assert len(first["products"]) == 5 and first["has_more"] is True
    ids = [p["product_id"] for p in first["products"] + second["products"]]
    assert len(set(ids)) == 10
    every = client.get("/api/products", params={"limit": 200}).json()
    assert len(every["products"]) == 48 and every["has_more"] is False
    assert {p["product_id"] for p in every["products"]} == {r["product_id"] for r in rows}

    watches = client.get("/api/products", params={"category": "relogio_feminino"}).json()
    assert len(watches["products"]) == 6
    assert {p["category"] for p in watches["products"]} == {"relogio_feminino"}

    target = rows[0]
    word = target["name"].split()[2]  # a word inside the name: q matches anywhere in it
    named = client.get("/api/products", params={"q": word}).json()["products"]
    assert target["product_id"] in [p["product_id"] for p in named]
    assert all(word.lower() in p["name"].lower() or word.lower() in p["product_id"].lower()
               for p in named)
    assert client.get("/api/products", params={"q": "zzz-no-such"}).json()["products"] == []

    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1},
                {"offset": 9223372036854775808}):  # past SQLite's integers: 422, not 500
        r = client.get("/api/products", params=bad)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_cursor_pages_walk_a_catalogue_that_changes_meanwhile(writable, rows):
    """By offset, a product removed before the next page moved the rest up by one: one was
    never listed. A page's next_cursor starts after its last product, whatever changed
    before it; walked to the end it lists each product once, in the listing's order."""
    client = writable[0]
    auth = {"Authorization": f"Bearer {KEY}"}
    listed = [p["product_id"] for p in
              client.get("/api/products", params={"limit": 200}).json()["products"]]
    first = client.get("/api/products", params={"limit": 5}).json()
    assert [p["product_id"] for p in first["products"]] == listed[:5]
    assert client.delete(f"/api/products/{listed[1]}", headers=auth).status_code == 204
    by_offset = client.get("/api/products", params={"limit": 5, "offset": 5}).json()
    assert by_offset["products"][0]["product_id"] == listed[6]  # (listed[5] missed)
    second = client.get("/api/products", params={"limit": 5,
                                                  "cursor": first["next_cursor"]}).json()
    assert [p["product_id"] for p in second["products"]] == listed[5:10]
    assert second["has_more"] is True
    for category in (None, "relogio_feminino"):  # walked to the end, with a filter too
        want = [p["product_id"] for p in client.get("/api/products", params={
            "limit": 200, "category": category}).json()["products"]]
        walked, cursor = [], None
        while True:
            page = client.get("/api/products", params={
                "limit": 4, "cursor": cursor, "category": category}).json()
            walked += [p["product_id"] for p in page["products"]]
            cursor = page["next_cursor"]
            assert (cursor is not None) == page["has_more"]
            if cursor is None:
                break
        assert walked == want and len(want) == (47 if category is None else 6)
    for bad in ({"cursor": "not a cursor!"}, {"cursor": "WzEsMiwzXQ"},  # [1,2,3]
                {"cursor": "eyJhIjoxfQ"},  # {"a":1}
                {"cursor": first["next_cursor"], "offset": 5}, {"cursor": "x" * 5000}):
        refused = client.get("/api/products", params=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert isinstance(refused.json()["detail"], str)


def test_a_product_whose_id_is_similar_keeps_its_address(writable, small_catalog, rows):
    """The path convertor that refuses ids ending with '/similar' refused the address of the
    product 'similar' (the address's end, not the id's): 404 to GET, PATCH and DELETE, and
    its writes were let past the key check (helper-260)."""
    client = writable[0]
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = _jpeg(small_catalog / rows[0]["image"], flip=True)
    added = client.post("/api/products", headers=auth, files=_upload(photo),
                        data={"product_id": "similar", "name": "Similar"})
    assert added.status_code == 201, added.text
    assert client.get("/api/products/similar").json()["product_id"] == "similar"
    assert client.head("/api/products/similar").status_code == 200
    assert client.get("/api/products/similar/similar").json()["product"]["product_id"] == \
        "similar"
    assert client.patch("/api/products/similar", json={"price": 5}).status_code == 401
    edited = client.patch("/api/products/similar", headers=auth, json={"price": 5})
    assert edited.status_code == 200 and edited.json()["price"] == 5
    assert client.delete("/api/products/similar", headers=auth).status_code == 204
    assert client.get("/api/products/similar").json()["detail"] == \
        "Product 'similar' is not in the store."
    for method in ("PATCH", "DELETE"):
        answer = client.request(method, f"/api/products/{rows[0]['product_id']}/similar",
                                headers=auth)
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"


def test_a_cursor_no_page_gave_is_a_422_whatever_it_holds(client):
    """JSON nested deeper than the interpreter recurses, or a lone surrogate written as a
    JSON escape, was a 500 (helper-260)."""
    import base64

    for text in ("[" * 2000, '["\\ud800", "a", "b"]', '["a", "\\udfff", "b"]'):
        cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        for category in (None, "relogio_feminino"):
            answer = client.get("/api/products", params={"cursor": cursor,
                                                          "category": category})
            assert answer.status_code == 422, (text[:20], answer.text)
            assert answer.json()["detail"].startswith("Invalid cursor")


def test_get_product_and_its_image(client, rows, small_catalog):
    row = rows[3]
    r = client.get(f"/api/products/{row['product_id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["product_id"] == row["product_id"] and body["name"] == row["name"]
    assert body["category"] == row["category"] and body["price"] is None
    assert body["attributes"]["colour"] == row["colour"]
    assert "image" not in body  # server paths are not exposed
    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == (small_catalog / row["image"]).read_bytes()

    missing = client.get("/api/products/no-such-product")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Product 'no-such-product' is not in the store."}
    assert client.get("/images/no-such-product").status_code == 404


@pytest.mark.parametrize("path", [
    "/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/images/%2Fetc%2Fpasswd",
    "/images/../../pyproject.toml",
    "/images/vitrine.sqlite",
    "/static/..%2F..%2Fapi.py",
    "/static/../../../../etc/passwd",
])
def test_no_request_reaches_other_files(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"root:" not in r.content and b"[project]" not in r.content
    assert b"SQLite" not in r.content


def test_similar(client, rows):
    pid = rows[10]["product_id"]
    r = client.get(f"/api/products/{pid}/similar", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["product"]["product_id"] == pid
    results = body["results"]
    assert len(results) == 5 and all(set(item) == RESULT_KEYS for item in results)
    assert pid not in [item["product_id"] for item in results]
    scores = [item["score"] for item in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert results[0]["image_url"] == f"/images/{results[0]['product_id']}"

    only = client.get(f"/api/products/{pid}/similar",
                      params={"k": 100, "category": "x_bolsa_feminina"}).json()["results"]
    assert len(only) == 6 and {item["category"] for item in only} == {"x_bolsa_feminina"}
    everything = client.get(f"/api/products/{pid}/similar", params={"k": 100}).json()
    assert len(everything["results"]) == 47

    for k in (0, 101, "x"):
        r = client.get(f"/api/products/{pid}/similar", params={"k": k})
        assert r.status_code == 422
        assert r.json()["detail"].startswith("Invalid query parameter 'k'")
    assert client.get("/api/products/nope/similar").status_code == 404


def test_a_phone_screenshot_finds_its_product(client, small_catalog, embedder,
                                              monkeypatch):
    """POST /api/search with a screenshot (the photo in the middle of a tall black page, a
    JPEG as phones share it): the product first (it was 13th); the two views, the page and
    the product cut out of it, go through the model as one batch."""
    shot = phone_screenshot(loafer(small_catalog), (0, 0, 0), "JPEG")
    batches = []
    real = embedder.embed_arrays

    def embed_arrays(arrays, *args, **kwargs):
        batches.append(len(arrays))
        return real(arrays, *args, **kwargs)

    monkeypatch.setattr(embedder, "embed_arrays", embed_arrays)
    r = client.post("/api/search", params={"k": 5}, files=_upload(shot))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["product_id"] for x in results][:1] == ["10308"] and len(results) == 5
    assert batches == [2]


def test_search_by_photo(client, rows, small_catalog, demo_catalog):
    row = rows[20]
    data = (small_catalog / row["image"]).read_bytes()
    r = client.post("/api/search", params={"k": 5}, files=_upload(data))
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 5 and all(set(item) == RESULT_KEYS for item in results)
    assert results[0]["product_id"] == row["product_id"] and results[0]["score"] > 0.999
    timing = r.headers["server-timing"]
    assert all(part in timing for part in ("decode;dur=", "model;dur=", "search;dur="))

    # a photo from outside the catalogue: most of its neighbours share its category
    outside = _rows(demo_catalog)
    held = next(x for x in outside if x["category"] == "relogio_masculino"
                and x["product_id"] not in {r["product_id"] for r in rows})
    found = client.post("/api/search", params={"k": 5},
                        files=_upload((demo_catalog / held["image"]).read_bytes())).json()
    assert sum(item["category"].startswith("relogio") for item in found["results"]) >= 4

    filtered = client.post("/api/search", params={"k": 3, "category": "salto_feminino"},
                           files=_upload(data)).json()["results"]
    assert len(filtered) == 3 and {x["category"] for x in filtered} == {"salto_feminino"}
    # the filter sent as a form field beside the photo, as an HTML form sends it
    in_form = client.post("/api/search", params={"k": 3}, files=_upload(data),
                          data={"category": "salto_feminino"}).json()["results"]
    assert in_form == filtered
    both = client.post("/api/search", params={"k": 3, "category": "salto_feminino"},
                       files=_upload(data), data={"category": "bolsa_feminina"})
    assert both.status_code == 422 and "send one" in both.json()["detail"]


def test_an_added_products_id_is_stripped_and_a_blank_one_refused(writable, small_catalog,
                                                                    rows):
    """An id of spaces alone was stored, listed and linked under an invisible id, and " x1 "
    kept its spaces, where a catalogue table's cells are stripped (helper-151)."""
    client, _ = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    blank = client.post("/api/products", headers=auth, files=_upload(photo),
                        data={"product_id": "   "})
    assert blank.status_code == 422
    assert blank.json()["detail"] == "Invalid form field 'product_id': it is empty."
    spaced = client.post("/api/products", headers=auth, files=_upload(photo),
                         data={"product_id": " x1 "})
    assert spaced.status_code == 201 and spaced.json()["product_id"] == "x1", spaced.text
    assert client.get("/api/products/x1").status_code == 200


def test_search_errors(client, small_catalog, rows):
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    for k in (0, 101):
        r = client.post("/api/search", params={"k": k}, files=_upload(photo))
        assert r.status_code == 422
    missing = client.post("/api/search")
    assert missing.status_code == 422 and "'image'" in missing.json()["detail"]
    as_text = client.post("/api/search", data={"image": "photo.jpg"})  # a form without a file
    assert as_text.status_code == 422
    assert as_text.json()["detail"] == ("Invalid form field 'image': send a file there (a part "
                                        "with a file name), not text.")

    for junk in (b"this is not a photo", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, photo[:300]):
        r = client.post("/api/search", files=_upload(junk))
        assert r.status_code in (400, 415), r.text
        detail = r.json()["detail"]
        assert detail.startswith("The uploaded file cannot be used as a photo")
        assert detail.count(". ") == 0 and "Traceback" not in detail

    # declared too large: refused before the body is read
    big = client.post("/api/search", files=_upload(b"\xff" * (LIMIT + 100_000)))
    assert big.status_code == 413 and "0.3 MB" in big.json()["detail"]
    assert big.headers["x-content-type-options"] == "nosniff"
    # the file part alone is over the limit while the whole body is within the slack
    part = client.post("/api/search", files=_upload(b"\xff" * (LIMIT + 1)))
    assert part.status_code == 413

    # no Content-Length (chunked): counted while reading
    def chunks():
        for _ in range(40):
            yield b"-" * 10_000

    chunked = client.post("/api/search", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 413 and chunked.json()["detail"].endswith("MB.")


def _form(parts: list[tuple[str, str | None, bytes]], boundary: str = "cut") -> bytes:
    """A multipart body of ``parts`` (name, file name or None, bytes), its closing boundary
    included."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                     if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def test_a_form_cut_off_before_its_closing_boundary_is_a_400(client, small_catalog, rows):
    """A body that ends before its closing boundary (an upload cut off on its way, its
    Content-Length to match) is a 400 saying so: python-multipart dropped the unfinished
    photo and it was a 422 "field 'image': field required". A whole form without the photo
    keeps its sentence."""
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    whole = _form([("category", None, rows[0]["category"].encode()),
                   ("image", "p.jpg", photo)])
    headers = {"Content-Type": "multipart/form-data; boundary=cut"}
    said = "The upload was cut off: the form ends before its closing boundary; send it again."
    for cut in (whole[:len(whole) // 2], whole[:whole.rindex(b"\r\n--cut--")],
                whole[:whole.index(b"filename")],
                b"\r\n" + whole[:len(whole) // 2]):  # (blank lines first: the parser skips
        # them, as a widely copied C# snippet sends them; it got through: helper-175)
        r = client.post("/api/search", content=cut, headers=headers)
        assert r.status_code == 400 and r.json() == {"detail": said}, r.text
    for sent in (whole, b"\r\n\r\n" + whole):
        assert client.post("/api/search", content=sent, headers=headers).status_code == 200
    epilogue = client.post("/api/search", content=whole + b"epilogue", headers=headers)
    assert epilogue.status_code == 200  # (text after the closing boundary is allowed)
    no_photo = client.post("/api/search", headers=headers,
                           content=_form([("category", None, b"x")]))
    assert no_photo.status_code == 422
    assert no_photo.json()["detail"] == "Invalid form field 'image': field required."
    # a body not framed as a form (LF line ends) is the parser's to refuse for what it is
    # ("send it again" would never help: helper-174)
    lf_only = client.post("/api/search", headers=headers, content=whole.replace(b"\r\n", b"\n"))
    assert lf_only.status_code == 400 and lf_only.json()["detail"] != said
    # a request that is not a POST is not judged: a GET of a file (whose response reads the
    # request to watch for a disconnect) went out empty, and a PATCH of JSON sent as a form
    # kept its own sentence
    photo_url = client.get(f"/api/products/{rows[0]['product_id']}").json()["image_url"]
    for url in ("/static/style.css", photo_url):
        got = client.get(url, headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert got.status_code == 200 and got.content == client.get(url).content, url


def test_a_closing_boundary_split_between_reads_is_found():
    """The closing boundary is looked for across the body's messages, wherever they split
    it; a body without one is refused once its last message is read."""
    import asyncio

    from fastapi import HTTPException

    from vitrine.web.guards import WholeForm

    whole = _form([("image", "p.jpg", b"\xff" * 50)], boundary="b")

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    def run(body: bytes, split: int) -> None:
        messages = [{"type": "http.request", "body": body[:split], "more_body": True},
                    {"type": "http.request", "body": body[split:], "more_body": False}]

        async def receive():
            return messages.pop(0)

        scope = {"type": "http", "method": "POST", "path": "/api/search",
                 "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
        asyncio.run(WholeForm(app)(scope, receive, None))

    for split in range(len(whole) + 1):
        run(whole, split)
    with pytest.raises(HTTPException) as refused:
        run(whole[:-8], 10)
    assert refused.value.status_code == 400

    # once the response has started, its reads of the request are not judged (a file
    # response watches for a disconnect: the 400 raised there cut the file, helper-174)
    sent = []

    async def answering(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        await send({"type": "http.response.body", "body": b"file"})

    async def record(message):
        sent.append(message)

    async def cut_receive():
        return {"type": "http.request", "body": whole[:-8], "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/images/x",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b")]}
    asyncio.run(WholeForm(answering)(scope, cut_receive, record))
    assert [m.get("body") for m in sent] == [None, b"file"]


def test_a_product_photo_over_the_limit_is_refused_and_one_at_the_limit_is_stored(
        settings, small_store, embedder, small_catalog, rows, tmp_path):
    """`POST /api/products` holds its photo to the upload limit (the body's limit leaves
    room for the form around it), to the byte."""
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    client = TestClient(_app(settings, store, embedder, api_key=KEY, max_upload_bytes=LIMIT))
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    at_limit = photo + b"\0" * (LIMIT - len(photo))  # (after the JPEG's end: the same photo)
    over = client.post("/api/products", files=_upload(at_limit + b"\0"),
                       data={"product_id": "big"}, headers=auth)
    assert over.status_code == 413
    assert over.json()["detail"] == "The upload is larger than the limit of 0.3 MB."
    assert client.get("/healthz").json()["products"] == 48
    assert client.get("/api/products/big").status_code == 404
    stored = client.post("/api/products", files=_upload(at_limit), data={"product_id": "big"},
                         headers=auth)
    assert stored.status_code == 201, stored.text
    assert client.get("/images/big").content == at_limit


def test_a_body_declared_too_large_is_refused_before_it_is_read():
    """The Content-Length over the limit is answered 413 at once: neither the body nor the
    app is reached (a stranger's 10 GB upload is not read to be refused)."""
    import asyncio

    from vitrine.web.guards import BodyLimit

    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def receive():
        pytest.fail("the body was read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/search",
             "headers": [(b"content-length", b"10000000000")]}
    asyncio.run(BodyLimit(app, max_body=1000, upload_limit=900)(scope, receive, send))
    assert reached == [] and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {
        "detail": "The upload is larger than the limit of 0.0009 MB."}
    within = {**scope, "headers": [(b"content-length", b"1000")]}
    asyncio.run(BodyLimit(app, max_body=1000, upload_limit=900)(within, receive, send))
    assert reached == ["/api/search"]


def test_a_text_field_over_1_mb_is_one_sentence(writable, small_catalog, rows):
    client, _ = writable  # the default 10 MB upload limit lets a 1 MB field through
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    r = client.post("/api/search", files=_upload(photo), data={"category": "x" * 1_100_000})
    assert r.status_code == 400
    assert r.json()["detail"] == ("A form field other than the photo is longer than 1 MB; "
                                  "send less text in it.")
    form = client.post("/api/search", data={"category": "x" * 1_100_000})  # url-encoded
    assert form.status_code == 400 and form.json()["detail"] == r.json()["detail"]


def test_default_upload_limit_is_10_mb(settings, small_store, embedder):
    from vitrine.config import Settings

    assert Settings().max_upload_bytes == 10_000_000
    default = TestClient(_app(settings, small_store, embedder))
    r = default.post("/api/search", files=_upload(b"\xff" * 10_000_001))
    assert r.status_code == 413 and "10 MB" in r.json()["detail"]


def test_writes_are_refused_without_a_configured_key(client, small_catalog, rows):
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    assert client.post("/api/products").status_code == 403  # from the headers alone
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}):
        add = client.post("/api/products", files=_upload(photo),
                          data={"product_id": "p1"}, headers=headers)
        assert add.status_code == 403 and "VITRINE_API_KEY" in add.json()["detail"]
        gone = client.delete(f"/api/products/{rows[0]['product_id']}", headers=headers)
        assert gone.status_code == 403
        edit = client.patch(f"/api/products/{rows[0]['product_id']}", json={"name": "x"},
                            headers=headers)
        assert edit.status_code == 403
    assert client.get(f"/api/products/{rows[0]['product_id']}").json()["name"] == rows[0]["name"]
    assert client.get("/healthz").json()["products"] == 48


def test_add_replace_and_delete_products(writable, small_catalog, rows):
    client, store = writable
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    fields = {"product_id": "novo-1", "name": "Bolsa nova", "category": "x_bolsa_feminina",
              "price": "R$ 1.299,90", "description": "Couro legítimo."}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                    {"Authorization": f"Basic {KEY}"}):
        refused = client.post("/api/products", files=_upload(photo), data=fields,
                              headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.delete(f"/api/products/{rows[0]['product_id']}",
                             headers=headers).status_code == 401
    # refused from the headers, before the body is read or checked (no photo here: not 422)
    assert client.post("/api/products", data={"product_id": "x"}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert "48 produtos" in client.get("/").text  # the per-category counts, now cached

    added = client.post("/api/products", files=_upload(photo), data=fields, headers=auth)
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["price"] == 1299.90 and body["name"] == "Bolsa nova"
    assert client.get("/healthz").json()["products"] == 49
    assert "49 produtos" in client.get("/").text  # the write renewed them
    saved = store / "uploads" / (hashlib.sha256(photo).hexdigest() + ".jpg")
    assert saved.read_bytes() == photo
    assert client.get("/images/novo-1").content == photo
    found = client.post("/api/search", params={"k": 1}, files=_upload(photo)).json()
    assert found["results"][0]["product_id"] == "novo-1"
    assert found["results"][0]["score"] > 0.999

    replaced = client.post("/api/products", files=_upload(photo), headers=auth,
                           data={**fields, "price": "", "name": "Bolsa renomeada"})
    assert replaced.status_code == 200
    assert saved.read_bytes() == photo  # replaced with the same photo: still its photo
    assert client.get("/images/novo-1").content == photo
    assert client.get("/api/products/novo-1").json()["name"] == "Bolsa renomeada"
    assert client.get("/api/products/novo-1").json()["price"] is None
    assert client.get("/healthz").json()["products"] == 49

    bad_price = client.post("/api/products", files=_upload(photo), headers=auth,
                            data={**fields, "product_id": "novo-2", "price": "abc"})
    assert bad_price.status_code == 422 and "price" in bad_price.json()["detail"]
    no_id = client.post("/api/products", files=_upload(photo), headers=auth,
                        data={"name": "x"})
    assert no_id.status_code == 422
    not_photo = client.post("/api/products", files=_upload(b"<html>hi</html>"), headers=auth,
                            data={**fields, "product_id": "novo-3"})
    assert not_photo.status_code in (400, 415)
    assert client.get("/healthz").json()["products"] == 49

    assert client.delete("/api/products/novo-1", headers=auth).status_code == 204
    assert client.get("/api/products/novo-1").status_code == 404
    assert "48 produtos" in client.get("/").text
    assert not saved.exists()  # the uploaded photo went with its only product
    again = client.delete("/api/products/novo-1", headers=auth)
    assert again.status_code == 404 and again.json()["detail"].endswith("not in the store.")
    catalogue_id = rows[5]["product_id"]
    assert client.delete(f"/api/products/{catalogue_id}", headers=auth).status_code == 204
    similar = client.get(f"/api/products/{rows[6]['product_id']}/similar",
                         params={"k": 100}).json()["results"]
    assert catalogue_id not in [x["product_id"] for x in similar] and len(similar) == 46


def test_the_server_opens_its_store_with_the_milvus_token(settings, small_store, embedder,
                                                          monkeypatch):
    """A Milvus server that asks for VITRINE_MILVUS_TOKEN gets it from `vitrine serve` too
    (the server opened its store without it)."""
    import vitrine.store

    seen, real = [], vitrine.store.open_store
    monkeypatch.setattr(vitrine.store, "open_store",
                        lambda location, **kw: seen.append(kw) or real(location, **kw))
    _app(settings, small_store, embedder, milvus_token="user:pass")
    assert seen and seen[0]["token"] == "user:pass"


def test_the_server_uses_the_configured_index_and_does_not_rebuild_it_per_write(
        settings, small_store, embedder, tmp_path, small_catalog, rows):
    """VITRINE_INDEX reaches the server's store (it used the defaults): it builds the HNSW
    graph beside the requests from its start (its first search built it in the request,
    holding the store: 11 s at 50,000 products; helper-210; then it layered on the flat
    index until a write), and products added through the API then are searched from the
    layer over the saved HNSW index, not by a rebuild."""
    import time

    store = tmp_path / "store"
    shutil.copytree(small_store, store)

    def index_files() -> list[str]:
        return sorted(p.name for p in store.glob("index.*.faiss"))

    flat = index_files()
    assert not any(".hnsw" in name for name in flat)
    client = TestClient(_app(settings, store, embedder, api_key=KEY, index="hnsw"))
    query = _jpeg(small_catalog / rows[3]["image"])
    top = client.post("/api/search", params={"k": 1}, files=_upload(query)).json()["results"]
    assert top[0]["product_id"] == rows[3]["product_id"]
    deadline = time.monotonic() + 60  # the graph, built and saved beside the requests
    while not any(".hnsw" in name for name in index_files()) and time.monotonic() < deadline:
        time.sleep(0.05)
    files = index_files()
    assert any(".hnsw" in name for name in files), files
    for n in range(2):
        photo = _jpeg(small_catalog / rows[30 + n]["image"], flip=True)
        added = client.post("/api/products", files=_upload(photo), headers={
            "Authorization": f"Bearer {KEY}"}, data={"product_id": f"novo-{n}", "name": "Nova"})
        assert added.status_code == 201, added.text
        found = client.post("/api/search", params={"k": 1}, files=_upload(photo)).json()
        assert found["results"][0]["product_id"] == f"novo-{n}"
    assert index_files() == files  # nothing rebuilt


def test_edit_product_fields(writable, small_catalog, rows, weights_path):
    """PATCH changes a product's fields and keeps its photo and vector; `vitrine index` then
    leaves an API product's edit and gives a catalogue product its table's values back."""
    from vitrine.store import open_store

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    row, other = rows[4], rows[20]
    pid = row["product_id"]
    db = open_store(store)
    vector = db.vector(pid)
    db.close()
    before = client.get(f"/api/products/{pid}").json()
    assert before["attributes"]  # the table's extra columns
    for headers in ({}, {"Authorization": "Bearer wrong"}):  # refused from the headers alone
        assert client.patch(f"/api/products/{pid}", content=b"{",
                            headers=headers).status_code == 401

    edited = client.patch(f"/api/products/{pid}", headers=auth,
                          json={"price": "R$ 1.299,90", "name": "  Nome novo ",
                                "category": other["category"]})
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert (body["price"], body["name"], body["category"]) == (1299.9, "Nome novo",
                                                               other["category"])
    for left_out in ("description", "attributes", "image_url"):
        assert body[left_out] == before[left_out]
    assert client.get(f"/api/products/{pid}").json() == body
    # the category filter sees the new category at once; the vector did not change
    similar = client.get(f"/api/products/{other['product_id']}/similar",
                         params={"k": 100, "category": other["category"]}).json()["results"]
    assert pid in [x["product_id"] for x in similar]
    db = open_store(store)
    assert np.array_equal(db.vector(pid), vector) and db.count() == 48
    db.close()
    assert client.patch(f"/api/products/{pid}", headers=auth,
                        json={"price": None}).json()["price"] is None
    assert client.patch(f"/api/products/{pid}", headers=auth,
                        json={"price": 10.5}).json()["price"] == 10.5

    for bad, word in (({}, "at least one"), ({"price": -1}, "price"), ({"price": "abc"}, "price"),
                      ({"image": "x.jpg"}, "image"), ({"name": None}, "name"),
                      ({"name": "x" * 301}, "name"), ({"price": True}, "price"),
                      ({"price": 1e13}, "price"), ({"price": "9" * 41}, "price"),
                      ({"price": "9" * 13}, "price")):
        r = client.patch(f"/api/products/{pid}", headers=auth, json=bad)
        assert r.status_code == 422 and word in r.json()["detail"], (bad, r.text)
    # a price text too long is said as that, not "should be a valid number" (helper-151)
    too_long = client.patch(f"/api/products/{pid}", headers=auth,
                            json={"price": "preço sob consulta, fale com o vendedor da loja"})
    assert too_long.status_code == 422 and "at most 40 characters" in too_long.json()["detail"]
    # a body saved as Windows-1252 was FastAPI's 400 "There was an error parsing the body";
    # JSON of UTF-8 that json.loads refused otherwise was said not to be UTF-8 (helper-209)
    for raw, words in ((b"{", "not valid JSON"), (b"[1]", "must be a JSON object"),
                       ('{"name": "Relógio"}'.encode("cp1252"), "must be UTF-8"),
                       (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                        "nested too deeply"),
                       (b'{"price": ' + b"9" * 5000 + b"}", "too many digits")):
        for kind in ("application/json", "Application/JSON; charset=utf-8",
                     "application/merge-patch+json"):  # (as FastAPI reads JSON)
            r = client.patch(f"/api/products/{pid}", content=raw,
                             headers={**auth, "Content-Type": kind})
            assert r.status_code == 422 and words in r.json()["detail"], (kind, r.text)
            assert ("UTF-8" in r.json()["detail"]) == (words == "must be UTF-8"), r.text
    # curl -d sends JSON as a form unless told: say which header is missing
    as_form = client.patch(f"/api/products/{pid}", content=b'{"price": 99}', headers={
        **auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert "Content-Type: application/json" in as_form.json()["detail"]
    # /docs fills a request body from the schema: no defaults that would blank the fields
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ProductEdit"]
    assert not [f for f, spec in schema["properties"].items() if "default" in spec]
    assert schema["examples"] == [{"price": "R$ 1.299,90"}]
    missing = client.patch("/api/products/no-such-id", headers=auth, json={"name": "x"})
    assert missing.status_code == 404 and "no-such-id" in missing.json()["detail"]
    # the reverse mistakes: JSON where a form with a photo belongs ("Invalid field 'image':
    # field required"), and an address with no id ("Product '' is not in the store")
    for path in ("/api/products", "/api/search"):
        as_json = client.post(path, headers=auth, json={"product_id": "j"})
        assert as_json.status_code == 422 and "multipart/form-data" in as_json.json()["detail"]
    for path in ("/api/products/", "/api/products//similar", "/images/"):
        nothing = client.get(path)
        assert nothing.status_code == 404, path
        assert nothing.json()["detail"] == "There is nothing at this address.", path
    assert client.get(f"/api/products/{pid}").json()["price"] == 10.5  # refusals changed nothing

    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    assert client.post("/api/products", files=_upload(photo), headers=auth,
                       data={"product_id": "novo-1", "name": "Bolsa"}).status_code == 201
    assert client.patch("/api/products/novo-1", headers=auth,
                        json={"name": "Bolsa editada", "price": "99"}).status_code == 200
    report = _index_cli(small_catalog, store, weights_path)
    assert (report["updated"], report["indexed"], report["uploaded"]) == (1, 0, 1)
    db = open_store(store)
    api_product, catalogue_product = db.get("novo-1"), db.get(pid)
    db.close()
    assert (api_product.name, api_product.price) == ("Bolsa editada", 99.0)
    assert catalogue_product.name == row["name"]  # the table's values are back
    assert catalogue_product.category == row["category"]


def _index_cli(catalog: Path, store: Path, weights: Path, **env_extra: str) -> dict:
    """``vitrine index CATALOG --store STORE --json`` in its own process, as a shop runs it."""
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights), **env_extra}
    proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "index", str(catalog),
                           "--store", str(store), "--json"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_reindexing_leaves_products_added_through_the_api(writable, small_catalog, rows,
                                                          weights_path, tmp_path):
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    new = {"product_id": "novo-1", "name": "Bolsa nova", "category": "x_bolsa_feminina"}
    assert client.post("/api/products", files=_upload(_jpeg(small_catalog / rows[30]["image"],
                                                             flip=True)),
                       data=new, headers=auth).status_code == 201
    replaced = rows[3]["product_id"]  # a catalogue product the shop replaced through the API
    assert client.post("/api/products", headers=auth,
                       files=_upload(_jpeg(small_catalog / rows[31]["image"], flip=True)),
                       data={"product_id": replaced, "name": "Substituído"}).status_code == 200
    # the very bytes of a catalogue photo, uploaded as another product
    same_bytes = (small_catalog / rows[7]["image"]).read_bytes()
    assert client.post("/api/products", files=_upload(same_bytes), headers=auth,
                       data={"product_id": "copia"}).status_code == 201

    # a photo saved by a server killed before it stored the product, and a file of the user's
    orphan = store / "uploads" / (hashlib.sha256(b"lost").hexdigest() + ".jpg")
    orphan.write_bytes(same_bytes)
    (store / "uploads" / "notes.txt").write_text("mine")

    report = _index_cli(small_catalog, store, weights_path)
    assert (report["removed"], report["indexed"], report["updated"]) == (0, 0, 0)
    assert report["uploaded"] == 3 and report["unchanged"] == 47
    assert report["orphan_photos"] == 1 and not orphan.exists()
    assert (store / "uploads" / "notes.txt").read_text() == "mine"
    assert len(list((store / "uploads").iterdir())) == 4  # the three products' photos + notes
    db = open_store(store)
    assert db.count() == 50 and db.get("novo-1").name == "Bolsa nova"
    assert db.get(replaced).name == "Substituído"
    db.close()

    copy = store / "uploads" / (hashlib.sha256(same_bytes).hexdigest() + ".jpg")
    assert copy.is_file()
    assert client.delete("/api/products/copia", headers=auth).status_code == 204
    assert not copy.exists()  # no product uses that file, though one has the same bytes
    assert (small_catalog / rows[7]["image"]).is_file()

    # deleted through the API, the replaced id goes back to the catalogue on the next run
    assert client.delete(f"/api/products/{replaced}", headers=auth).status_code == 204
    report = _index_cli(small_catalog, store, weights_path)
    assert (report["indexed"], report["removed"], report["uploaded"]) == (1, 0, 1)
    db = open_store(store)
    assert db.get(replaced).name == rows[3]["name"] and db.count() == 49
    # a copy of the store (it still names the original's photos) and another store sharing
    # this upload folder: neither run deletes a photo that a product names
    shutil.copytree(store, tmp_path / "copy")
    photos = sorted(p.name for p in (store / "uploads").iterdir())
    assert _index_cli(small_catalog, tmp_path / "copy", weights_path)["orphan_photos"] == 0
    assert sorted(p.name for p in (tmp_path / "copy" / "uploads").iterdir()) == photos
    other = _index_cli(small_catalog, tmp_path / "other", weights_path,
                       VITRINE_UPLOAD_DIR=str(store / "uploads"))
    assert other["orphan_photos"] == 0
    assert sorted(p.name for p in (store / "uploads").iterdir()) == photos
    # copied into another store (whose own upload folder is empty), novo-1 is still known
    moved = open_store(tmp_path / "moved", create=True)
    original = Path(db.get("novo-1").image)
    migrate_store(db, moved, photos_to=tmp_path / "moved" / "uploads", show_progress=False)
    db.close()
    copied = Path(moved.get("novo-1").image)  # the API's photo travels with its product
    assert copied.parent == tmp_path / "moved" / "uploads"
    assert copied.read_bytes() == original.read_bytes()
    assert Path(moved.get(rows[0]["product_id"]).image) == small_catalog / rows[0]["image"]
    moved.close()
    report = _index_cli(small_catalog, tmp_path / "moved", weights_path)
    assert (report["removed"], report["uploaded"], report["unchanged"]) == (0, 1, 48)
    assert report["orphan_photos"] == 0 and copied.is_file()


def test_a_moved_store_serves_and_migrates_its_own_uploaded_photos(writable, settings, rows,
                                                                     small_catalog, embedder,
                                                                     tmp_path):
    """A store folder moved or restored elsewhere names its uploaded photos at the old place:
    they were 404 on the page and `migrate` left them behind, lost with the old folder."""
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store

    client, store = writable
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    assert client.post("/api/products", files=_upload(photo), data={"product_id": "novo-1"},
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 201
    client.close()
    moved = store.rename(tmp_path / "restored")
    app = TestClient(_app(settings, moved, embedder, api_key=KEY))
    served = app.get("/images/novo-1")
    assert served.status_code == 200 and served.content == photo
    # the same photo added again is named at the new place; deleting that product keeps
    # the photo, which novo-1 still names (at the old place)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert app.post("/api/products", files=_upload(photo), data={"product_id": "novo-2"},
                    headers=auth).status_code == 201
    assert app.delete("/api/products/novo-2", headers=auth).status_code == 204
    assert app.get("/images/novo-1").content == photo
    app.close()
    source, target = open_store(moved), open_store(tmp_path / "target", create=True)
    migrate_store(source, target, photos_to=tmp_path / "target" / "uploads",
                  show_progress=False)
    source.close()
    shutil.rmtree(moved)
    copied = Path(target.get("novo-1").image)
    assert copied.parent == tmp_path / "target" / "uploads" and copied.read_bytes() == photo
    target.close()


@pytest.mark.parametrize("folder", ["own", "setting"])
def test_migrate_leaves_out_a_product_whose_photo_the_source_deletes_during_the_copy(
        writable, rows, small_catalog, tmp_path, monkeypatch, folder):
    """The source's server deletes a product (and its photo) while `migrate` copies the
    store's snapshot: the product is left out and counted, not copied naming a photo that
    no longer exists; a photo already missing before the copy keeps its product copied.
    Also when VITRINE_UPLOAD_DIR names the target's folder (a copy into Milvus needs one),
    which migrate took for the source's folder and so watched the wrong one."""
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    photos = {}
    for n, pid in enumerate(("novo-1", "novo-2", "novo-3")):
        photo = _jpeg(small_catalog / rows[30 + n]["image"], flip=True)
        assert client.post("/api/products", files=_upload(photo), data={"product_id": pid},
                           headers=auth).status_code == 201
        photos[pid] = store / "uploads" / (hashlib.sha256(photo).hexdigest() + ".jpg")
        assert photos[pid].read_bytes() == photo
    client.close()
    photos["novo-3"].unlink()  # lost before the copy
    source, target = open_store(store), open_store(tmp_path / "target", create=True)
    real = source.iter_products

    def deleted_meanwhile(*args, **kwargs):  # while the snapshot is read (the longest part)
        photos["novo-2"].unlink(missing_ok=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(source, "iter_products", deleted_meanwhile)
    photos_to = tmp_path / ("target/uploads" if folder == "own" else "set")
    done = migrate_store(source, target, photos_to=photos_to,
                         photos_from=None if folder == "own" else photos_to,
                         show_progress=False)
    assert done.changed_meanwhile == ["novo-2"] and done.copied == source.count() - 1
    assert target.get("novo-2") is None
    assert Path(target.get("novo-1").image).read_bytes() == photos["novo-1"].read_bytes()
    assert Path(target.get("novo-3").image) == photos["novo-3"]  # kept as it was
    source.close()
    target.close()


def test_an_index_rebuild_due_after_a_write_runs_beside_the_requests(
        settings, small_store, embedder, rows, small_catalog, tmp_path, monkeypatch):
    """Past the index layer's limit, the write that finds a rebuild due does not run it (a
    large HNSW graph took 158 s inside an upload, holding the writer lock): a thread beside
    the requests builds the index and saves it, and searches see every write throughout."""
    import threading

    from vitrine.service import VitrineService
    from vitrine.service_writes import NewProduct
    from vitrine.store import index_files

    shutil.copytree(small_store, tmp_path / "store")
    built_on = []
    real_build = index_files.IndexFiles._build
    monkeypatch.setattr(index_files, "RECENT_MAX", 1)
    monkeypatch.setattr(index_files.IndexFiles, "_build", lambda self, n: built_on.append(
        threading.current_thread().name) or real_build(self, n))
    service = VitrineService(settings, tmp_path / "store", embedder)
    try:
        for n in range(3):
            photo = _jpeg(small_catalog / rows[30 + n]["image"], flip=True)
            service.add_product(NewProduct(f"novo-{n}"), photo)
            assert service.search_photo(photo, 1)[0][0].product.product_id == f"novo-{n}"
            if service.rebuild_thread is not None:
                service.rebuild_thread.join(timeout=60)
        assert built_on and set(built_on) == {"vitrine-index-rebuild"}
        store = service.store
        newest = max(int(p.name.split(".")[1]) for p in store.root.glob("index.*.faiss"))
        assert newest > int(next(small_store.glob("index.*.faiss")).name.split(".")[1])
        assert service.count() == len(rows) + 3
    finally:
        service.close()


def test_searches_take_the_index_rebuilt_beside_writes_without_waiting_for_another_write(
        settings, small_store, embedder, rows, small_catalog, tmp_path, monkeypatch):
    """The write that crosses VITRINE_ANN_MIN_ITEMS starts the HNSW build beside the
    requests; two uploads land during it. The rebuilt graph is saved under the generation
    of the build's snapshot, two behind the store's, and the server kept searching the flat
    index and a growing exact layer until the next write (16-24 ms a search instead of 1 ms
    at 50,000 products; helper-210): its next search takes the graph, those two uploads
    layered on it."""
    import threading

    from vitrine.ann import LayeredIndex
    from vitrine.service import VitrineService
    from vitrine.service_writes import NewProduct
    from vitrine.store import index_files

    shutil.copytree(small_store, tmp_path / "store")
    building, release = threading.Event(), threading.Event()
    real_build = index_files.IndexFiles._build

    def build(self, n, batch=20_000):  # the rebuild waits until two uploads came
        if threading.current_thread().name == "vitrine-index-rebuild":
            building.set()
            assert release.wait(60)
        return real_build(self, n, batch)

    monkeypatch.setattr(index_files.IndexFiles, "_build", build)
    crossing = settings.model_copy(update={"ann_min_items": len(rows) + 3})
    service = VitrineService(crossing, tmp_path / "store", embedder)
    try:
        photos = [_jpeg(small_catalog / rows[30 + n]["image"], flip=True) for n in range(5)]
        for n in range(5):
            service.add_product(NewProduct(f"novo-{n}"), photos[n])
            assert service.search_photo(photos[n], 1)[0][0].product.product_id == f"novo-{n}"
            if n == 2:  # the store crossed: the graph is being built
                assert building.wait(60)
        release.set()
        service.rebuild_thread.join(60)
        assert not service.rebuild_thread.is_alive()
        store = service.store
        [graph] = store.root.glob("index.*.hnsw*.faiss")
        assert int(graph.name.split(".")[1]) == store.generation() - 2
        assert service.search_photo(photos[4], 1)[0][0].product.product_id == "novo-4"
        index = store._index
        assert isinstance(index, LayeredIndex) and index.base.kind == "hnsw"
        assert index.recent.ntotal == 2 and index.ntotal == len(rows) + 5
        assert service.search_photo(photos[3], 1)[0][0].product.product_id == "novo-3"
    finally:
        release.set()
        service.close()


def test_a_server_told_another_index_kind_rebuilds_it_at_start(
        settings, small_store, embedder, small_catalog, rows, tmp_path, monkeypatch):
    """A server started with index settings other than the ones `vitrine index` saved its
    index with (VITRINE_INDEX=hnsw here) searched the saved flat index with an empty exact
    layer until a write or `vitrine index` rebuilt it (exact, and slower at scale; helper-183):
    it starts the rebuild beside its requests at once, and searches take the graph once it
    is saved, without a write."""
    from vitrine.ann import VectorIndex
    from vitrine.service import VitrineService

    shutil.copytree(small_store, tmp_path / "store")
    same = VitrineService(settings, tmp_path / "store", embedder)  # its own kind is saved
    assert same.rebuild_thread is None
    same.close()
    graph = settings.model_copy(update={"index": "hnsw"})
    service = VitrineService(graph, tmp_path / "store", embedder)
    try:
        # (at once, or, where the store's writer lock was held as it started, from the
        # thread that waits for it: seen before it started, joining it failed, ci60)
        started = time.monotonic()
        while service.rebuild_thread is None and time.monotonic() - started < 60:
            time.sleep(0.05)
        assert service.rebuild_thread is not None
        service.rebuild_thread.join(60)
        assert not service.rebuild_thread.is_alive()
        assert "hnsw" in {p.name.split(".")[2][:4]
                          for p in (tmp_path / "store").glob("index.*.faiss")}
        photo = (small_catalog / rows[3]["image"]).read_bytes()
        assert service.search_photo(photo, 1)[0][0].product.product_id == rows[3]["product_id"]
        index = service.store._index
        assert isinstance(index, VectorIndex) and index.kind == "hnsw"
    finally:
        service.close()
    # started while another process writes (`vitrine index`, which saves its own index at
    # its end): no rebuild of the products written so far (helper-199), one once it is done
    from vitrine import service_writes
    from vitrine.store.writer_lock import take_writer_lock

    monkeypatch.setattr(service_writes, "WRITER_POLL_S", 0.1)
    for graphs in (tmp_path / "store").glob("index.*.hnsw*.faiss"):
        graphs.unlink()

    def waiting() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "vitrine-index-wait"]

    writing = take_writer_lock(tmp_path / "store")
    service = VitrineService(graph, tmp_path / "store", embedder)
    try:
        time.sleep(0.3)
        assert service.rebuild_thread is None and len(waiting()) == 1
        service.close()  # (closed meanwhile: the wait ends, and no rebuild starts after it:
        for thread in waiting():  # helper-235)
            thread.join(5)
        assert waiting() == []
        writing.close()
        time.sleep(0.3)
        assert service.rebuild_thread is None
        writing = take_writer_lock(tmp_path / "store")
        service = VitrineService(graph, tmp_path / "store", embedder)
        time.sleep(0.3)
        assert service.rebuild_thread is None
        writing.close()
        for _ in range(100):
            if service.rebuild_thread is not None:
                break
            time.sleep(0.1)
        assert service.rebuild_thread is not None
        service.rebuild_thread.join(60)
        assert list((tmp_path / "store").glob("index.*.hnsw*.faiss"))
    finally:
        writing.close()
        service.close()
    # where the first search builds the index itself, no rebuild beside it builds it again
    # (two copies of the vectors at once; helper-225): told `flat` on a store of graphs
    # alone (a reader told flat never layers on a graph), or no index saved at all
    for flat in (tmp_path / "store").glob("index.*.flat*.faiss"):
        flat.unlink()
    for told, files in ((settings.model_copy(update={"index": "flat"}), "index.*.hnsw*"),
                        (graph, "index.*")):
        for saved in (tmp_path / "store").glob(files + ".faiss"):
            saved.unlink()
        service = VitrineService(told, tmp_path / "store", embedder)
        try:
            assert service.rebuild_thread is None
            assert service.search_photo(photo, 1)[0][0].product.product_id == \
                rows[3]["product_id"]
        finally:
            service.close()


def test_a_latin1_key_matches_as_latin1_or_utf8_bytes(settings, small_store, embedder):
    """A key such as "clé" matched only a client sending Latin-1 bytes (requests, fetch);
    curl in a UTF-8 shell sends UTF-8. Both match; another key does not."""
    client = TestClient(_app(settings, small_store, embedder, api_key="clé"))
    for sent, status in ((b"Bearer cl\xe9", 404), ("Bearer clé".encode(), 404),
                         (b"Bearer cle", 401)):
        assert client.delete("/api/products/none", headers={"Authorization": sent}
                             ).status_code == status, sent
    client.close()


def test_no_redirect_names_the_host_header_and_only_the_docs_get_their_csp(client):
    """The framework's slash-fixing redirects built their Location from the Host header
    (`Host: evil.example` → `Location: http://evil.example/search`: a cache or proxy that
    passes Host on could be poisoned), and every page under /docs… (a 404 too) got the
    docs' looser CSP."""
    from vitrine.web.guards import CSP, DOCS_CSP

    for path in ("/search/", "/docs/", "/healthz/", "/static"):
        answer = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert answer.status_code == 404 and "evil.example" not in answer.headers.get(
            "location", ""), path
    assert client.get("/docs").headers["content-security-policy"] == DOCS_CSP
    for path in ("/docsx", "/redoc-anything", "/docs/a/b"):
        assert client.get(path).headers["content-security-policy"] == CSP, path


def test_an_upload_folder_that_is_a_file_is_one_sentence(settings, small_store, embedder,
                                                          small_catalog, tmp_path):
    """VITRINE_UPLOAD_DIR naming a file: every upload was a 500 (the clean-up of the part
    file raised NotADirectoryError). The server refuses to start; a save there is a
    StoreError (the API's 409)."""
    from vitrine.errors import StoreError
    from vitrine.store import save_photo

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StoreError, match="upload folder .*afile .* is a file"):
        _app(settings, small_store, embedder, upload_dir=afile, api_key=KEY)
    _app(settings, small_store, embedder, upload_dir=afile)  # (no key: it never writes)
    with pytest.raises(StoreError, match="cannot save the photo in .*afile"):
        save_photo(afile, afile / "ab.jpg", b"photo")
    # a folder under the file: refused at start too (it started, and every upload was a
    # 409 after the model's work)
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    with pytest.raises(StoreError, match=r"upload folder .*fotos \(VITRINE_UPLOAD_DIR\) "
                                         r"is under a file \(.*afile\)"):
        _app(settings, store, embedder, upload_dir=afile / "fotos", api_key=KEY)
    if sys.version_info < (3, 13):  # a loop of links: a traceback (3.13 resolves it)
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        with pytest.raises(StoreError, match=r"VITRINE_UPLOAD_DIR .*loop/fotos is a loop"):
            _app(settings, store, embedder, upload_dir=tmp_path / "loop" / "fotos",
                 api_key=KEY)
    # nothing is made at start (a read-only replica with the writer's key kept starting)
    client = TestClient(_app(settings, store, embedder, api_key=KEY))
    assert not (store / "uploads").exists()
    (store / "uploads").symlink_to(tmp_path / "gone")  # a link to nothing: said at start
    with pytest.raises(StoreError, match=r"upload folder .*uploads is a link to nothing"):
        _app(settings, store, embedder, api_key=KEY)
    (store / "uploads").unlink()
    # one that becomes a file while the server runs: the 409 names the folder by its name,
    # as it names the store, not by the server's path
    fotos = tmp_path / "fotos"
    client = TestClient(_app(settings, store, embedder, upload_dir=fotos, api_key=KEY))
    fotos.write_text("x")
    photo = next(small_catalog.glob("*/*.jpg"))
    refused = client.post("/api/products", headers={"Authorization": f"Bearer {KEY}"},
                          files=_upload(_jpeg(photo)), data={"product_id": "novo"})
    assert refused.status_code == 409 and "fotos" in refused.json()["detail"]
    assert "retry-after" not in refused.headers  # (no retry mends it: not a busy store)
    assert str(tmp_path) not in refused.text


def test_closing_during_a_rebuild_says_it_is_left_unfinished(settings, small_store, embedder,
                                                              caplog):
    """The server does not wait minutes for a rebuild at shutdown: it says so at a level the
    server's log shows (an info line of ours was never printed)."""
    import threading

    from vitrine.service import VitrineService

    service = VitrineService(settings, small_store, embedder)
    done = threading.Event()
    service.rebuild_thread = threading.Thread(target=done.wait, daemon=True)
    service.rebuild_thread.start()
    with caplog.at_level(logging.WARNING, logger="vitrine.service"):
        service.close()
    done.set()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "rebuild of" in caplog.text and "left unfinished" in caplog.text


def test_a_rebuild_that_cannot_be_saved_is_one_log_line(settings, small_store, embedder,
                                                         caplog, monkeypatch):
    """The rebuild beside the requests failing for a reason it says (a folder it may not
    write) is logged as that sentence, not as a traceback, which reads as a bug."""
    from vitrine.errors import StoreError
    from vitrine.service import VitrineService
    from vitrine.store import EmbeddedStore

    def refused(self):
        raise StoreError(f"the rebuilt index of {self.root} could not be saved (Permission "
                         "denied).")

    monkeypatch.setattr(EmbeddedStore, "rebuild_index", refused)
    service = VitrineService(settings, small_store, embedder)
    try:
        with caplog.at_level(logging.WARNING, logger="vitrine.service"):
            service._rebuild_index()
            service.rebuild_thread.join(30)
    finally:
        service.close()
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.WARNING, None)]
    assert caplog.records[0].getMessage() == (
        f"rebuilding the search index of {small_store} failed: the rebuilt index of "
        f"{small_store} could not be saved (Permission denied).")


def test_writes_queued_behind_another_give_up_after_one_wait(settings, small_store, embedder,
                                                             tmp_path, monkeypatch):
    """Uploads queued while another write holds the store (``vitrine index``, a slow write)
    are refused once the API's wait is over, each on its own clock: they held request
    threads for 2 s more per upload ahead of them, the whole pool in a burst."""
    import threading

    import vitrine.service_writes
    from vitrine.errors import StoreError
    from vitrine.service import VitrineService

    shutil.copytree(small_store, tmp_path / "store")
    monkeypatch.setattr(vitrine.service_writes, "API_WRITE_WAIT", 0.3)
    service = VitrineService(settings, tmp_path / "store", embedder)
    refused, waits = [], []

    class Waited:  # the server's write lock, telling how long each write waits for it
        def __init__(self, lock):
            self.lock = lock

        def acquire(self, blocking=True, timeout=-1):
            waits.append(timeout)
            return self.lock.acquire(blocking, timeout)

        def release(self):
            self.lock.release()

        def __enter__(self):
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    monkeypatch.setattr(service, "_write_lock", Waited(service._write_lock))

    def delete(pid: str) -> None:
        try:
            service.delete_product(pid)
        except StoreError as exc:
            refused.append(str(exc))

    try:
        with service._write_lock:  # another write of this server, not ending
            threads = [threading.Thread(target=delete, args=(f"x{i}",)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=1.5)  # all within one wait, not four in a row
            assert not any(thread.is_alive() for thread in threads)
        assert len(refused) == 4 and all("still in progress" in text for text in refused)
        assert waits == [0.3] * 4  # (API_WRITE_WAIT each)
    finally:
        service.close()


def test_a_write_refused_while_another_process_writes_says_when_to_retry(writable, rows,
                                                                          monkeypatch):
    """A write refused because `vitrine index` (another process) holds the store is a 409
    with Retry-After (helper-129: a client had no hint when to try again); nothing changed."""
    import vitrine.service_writes
    from vitrine.store.embedded import EmbeddedStore
    from vitrine.store.writer_lock import take_writer_lock

    client, store = writable
    monkeypatch.setattr(vitrine.service_writes, "API_WRITE_WAIT", 0.2)
    waits, real_lock = [], EmbeddedStore.lock_for_writing
    monkeypatch.setattr(EmbeddedStore, "lock_for_writing", lambda self, wait: (
        waits.append(wait), real_lock(self, wait))[1])
    pid = rows[0]["product_id"]
    lock = take_writer_lock(store)  # (an index running)
    try:
        busy = client.patch(f"/api/products/{pid}", json={"name": "Outro"},
                            headers={"Authorization": f"Bearer {KEY}"})
    finally:
        lock.close()
    assert busy.status_code == 409 and busy.headers["retry-after"] == "2", busy.text
    assert "Another process is writing" in busy.json()["detail"]
    assert len(waits) == 1 and 0 <= waits[0] <= 0.2  # (what is left of API_WRITE_WAIT)
    assert client.get(f"/api/products/{pid}").json()["name"] != "Outro"


def test_a_write_to_a_store_gone_from_under_the_server_says_so(writable, rows, settings,
                                                              embedder, tmp_path):
    """A write while the store is gone (deleted and being indexed anew by a `vitrine index`
    that has not made it yet, or moved away) says it is gone and to try again once it is
    indexed: it told the client to create one with 'vitrine index', which may be running.
    A server asked to open no store at all still gets that advice."""
    from vitrine.api import create_app
    from vitrine.errors import StoreError

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    store.rename(tmp_path / "moved")
    said = ("The store store is gone: its database is no longer where the server opened it; "
            "nothing changed (if it is being indexed anew, try again once that is done).")
    for answer in (client.patch(f"/api/products/{rows[0]['product_id']}", headers=auth,
                                json={"name": "Outro"}),
                   client.delete(f"/api/products/{rows[0]['product_id']}", headers=auth)):
        assert answer.status_code == 409 and answer.json() == {"detail": said}, answer.text
    with pytest.raises(StoreError, match="create one with 'vitrine index"):
        create_app(settings, tmp_path / "none", embedder=embedder)


def test_a_busy_write_says_the_whole_time_it_waited(settings, small_store, embedder, tmp_path,
                                                    monkeypatch):
    """A write that waited for this server's own write, then for another process's, says
    the time it waited in all (helper-144: "waited 0.5 s" after two seconds)."""
    import vitrine.service_writes
    from vitrine.errors import StoreBusy
    from vitrine.service import VitrineService
    from vitrine.store.embedded import EmbeddedStore
    from vitrine.store.writer_lock import take_writer_lock

    shutil.copytree(small_store, tmp_path / "store")
    monkeypatch.setattr(vitrine.service_writes, "API_WRITE_WAIT", 0.8)
    waits, real_lock = [], EmbeddedStore.lock_for_writing
    monkeypatch.setattr(EmbeddedStore, "lock_for_writing", lambda self, wait: (
        waits.append(wait), real_lock(self, wait))[1])
    service = VitrineService(settings, tmp_path / "store", embedder)
    lock = take_writer_lock(tmp_path / "store")  # (an index running)
    ahead = threading.Timer(0.5, service._write_lock.release)  # this server's write ends
    try:
        service._write_lock.acquire()
        ahead.start()
        with pytest.raises(StoreBusy, match=r"another process is writing to the store "
                                            r"\S+ \(waited \d+\.\d s\)\.$") as busy:
            service.delete_product("x")
        assert float(re.search(r"waited (\S+) s", str(busy.value))[1]) >= 0.8
        assert len(waits) == 1 and 0 <= waits[0] <= 0.8  # (the rest of API_WRITE_WAIT)
    finally:
        ahead.join()
        lock.close()
        service.close()


def test_products_added_through_the_api_before_the_mark_are_kept_and_marked(
        writable, rows, small_catalog, embedder, tmp_path, monkeypatch):
    """A store from before 29 Nov 2026 did not mark the products added through the API, and
    named their photos from the folder its server ran in: index removed them (and pruned their
    photos) when run from another folder or on a moved store, and migrate dropped the mark."""
    from vitrine.indexer import index_catalog
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store

    client, store = writable
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    assert client.post("/api/products", files=_upload(photo), data={"product_id": "novo-1"},
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 201
    client.close()
    db = open_store(store)
    name = Path(db.get("novo-1").image).name
    db.close()
    with sqlite3.connect(store / "vitrine.sqlite") as db:  # as the old server wrote it
        db.execute("UPDATE products SET metadata_hash = substr(metadata_hash, 3), image = ? "
                   "WHERE product_id = 'novo-1'", (f"loja/uploads/{name}",))
    moved = store.rename(tmp_path / "restored")
    # migrate straight from the old store: the product is known as added through the API
    source, target = open_store(moved), open_store(tmp_path / "target", create=True)
    migrate_store(source, target, photos_to=tmp_path / "target" / "uploads",
                  photos_from=moved / "uploads", show_progress=False)
    source.close()
    assert target.get("novo-1").uploaded
    assert (tmp_path / "target" / "uploads" / name).read_bytes() == photo
    target.close()
    # index it, run from another folder than the old server's
    monkeypatch.chdir(tmp_path)
    db = open_store(moved)
    report = index_catalog(small_catalog, db, embedder, uploads=moved / "uploads",
                           show_progress=False)
    assert (report.removed, report.uploaded, report.orphan_photos) == (0, 1, 0)
    assert db.get("novo-1").uploaded  # marked now: later runs and migrate know it by that
    assert Path(db.get("novo-1").image) == moved / "uploads" / name
    db.close()
    assert (moved / "uploads" / name).read_bytes() == photo


def test_the_catalogue_folder_is_kept_as_long_as_the_category_counts(settings, small_store,
                                                                      embedder, monkeypatch):
    """One CATEGORIES_TTL_S (service_categories') for the counts and the store's catalogue
    folder: split from service.py, the folder kept its own copy of it."""
    import time

    from vitrine import service_categories
    from vitrine.service import VitrineService

    service = VitrineService(settings, small_store, embedder)
    try:
        folder = service.store.catalog_folder()
        monkeypatch.setattr(service_categories, "CATEGORIES_TTL_S", 0.5)
        service._catalogue = ("/elsewhere", time.monotonic() - 1)  # (read a second ago)
        assert service._catalogue_folder() == folder
    finally:
        service.close()


def test_category_counts_are_shared_for_a_while(settings, small_store, embedder, monkeypatch):
    from vitrine import service as service_module
    from vitrine import service_categories

    service = service_module.VitrineService(settings, small_store, embedder)
    counted = []
    real = service.store.categories
    monkeypatch.setattr(service.store, "categories", lambda: counted.append(1) or real())
    first = service.categories()
    assert sum(first.values()) == 48 and service.categories() == first and len(counted) == 1
    first.clear()  # a caller's copy: the cached counts stay whole
    assert sum(service.categories().values()) == 48 and len(counted) == 1
    # a store that keeps no record of its writes (Milvus): expired, counted again
    monkeypatch.setattr(service.store, "write_mark", lambda: None)
    service._categories = None
    assert service.categories() == service.categories() and len(counted) == 2
    service._categories = (0.0, *service._categories[1:])  # expired: counted again
    assert service.categories() and len(counted) == 3
    # a count slower than CATEGORIES_TTL_S (a large Milvus collection) is kept after it
    # ends: stamped when it began, it was stale when stored, and never shared
    monkeypatch.setattr(service_categories, "CATEGORIES_TTL_S", 0.2)  # (kept 1 s after it)
    monkeypatch.setattr(service.store, "categories", lambda: (
        counted.append(1), threading.Event().wait(0.5), real())[2])
    service._categories = None
    assert service.categories() == service.categories() and len(counted) == 4
    assert service._categories[0] <= time.monotonic() + 6 * 0.2  # (0.2 s's: at most 6 ×)
    service.close()


def test_embedded_counts_are_kept_until_a_write(settings, small_store, embedder, tmp_path):
    """The embedded store's write mark tells every write of any process, so its counts (and
    what the pages derive from them: the category field, the folded names) are kept until
    one: expiring them every CATEGORIES_TTL_S as well counted every product again (a GROUP
    BY holding the store, 40-76 ms at 200,000 products) and folded every category name
    again (0.9-1.5 s of the interpreter at 60,000 categories) every 10 s with no write."""
    from vitrine.service import VitrineService
    from vitrine.store import open_store
    from vitrine.web.categories import category_names

    shutil.copytree(small_store, tmp_path / "store")
    service = VitrineService(settings, tmp_path / "store", embedder)
    try:
        counted = []
        real = service.store.categories
        service.store.categories = lambda: counted.append(1) or real()
        names = service.derived(category_names)
        service._categories = (0.0, *service._categories[1:])  # past CATEGORIES_TTL_S
        assert service.derived(category_names) is names and len(counted) == 1
        other = open_store(tmp_path / "store")  # another process's write: counted again
        other.lock_for_writing()
        first = other.list_products(limit=1)[0]
        other.update_metadata([other.get(first.product_id).to_product(category="nova")])
        other.close()
        assert service.categories()["nova"] == 1 and len(counted) == 2
    finally:
        service.close()


def test_another_processs_write_is_counted_at_once(settings, small_store, embedder, tmp_path):
    """The pages' counts were kept CATEGORIES_TTL_S (10 s) after another process's write (a
    second server's upload, `vitrine index`): "0 products" above a product of a new
    category, "1 product" above "No products found" (helper-222). The embedded store's
    writes are seen in its meta table; with none, the count is shared."""
    from vitrine.service import VitrineService
    from vitrine.store import open_store

    shutil.copytree(small_store, tmp_path / "store")
    service = VitrineService(settings, tmp_path / "store", embedder)
    try:
        before = service.categories()
        other = open_store(tmp_path / "store")  # another process's handle
        other.lock_for_writing()
        first = other.list_products(limit=1)[0]
        # a field edit: no new generation
        other.update_metadata([other.get(first.product_id).to_product(category="brand-new")])
        counts = service.categories()
        assert counts["brand-new"] == 1
        assert counts[first.category] == before[first.category] - 1
        assert other.delete([first.product_id]) == 1
        assert "brand-new" not in service.categories()
        other.close()
        counted = []
        real = service.store.categories
        service.store.categories = lambda: counted.append(1) or real()
        assert service.categories() == service.categories() and not counted  # (kept)
    finally:
        service.close()


def at_once(monkeypatch, module, name: str):
    """Replace ``module.name`` by a version that lingers 0.2 s (long enough for the other
    calls to pile up); returns a function giving the most calls that ran at once, and the
    names of the threads they ran in."""
    busy, most, lock, real = [0], [0], threading.Lock(), getattr(module, name)
    threads: set[str] = set()

    def counted(*args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
            threads.add(threading.current_thread().name)
        try:
            threading.Event().wait(0.2)
            return real(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(module, name, counted)
    return lambda: most[0], threads


def in_decode_threads(threads: set[str]) -> bool:
    """Whether every decode ran in the service's own threads, at most DECODE_SLOTS of them:
    glibc keeps what a thread freed for that thread, so decodes spread over the 40 request
    threads held 4 GB after 20 uploads of 40 megapixels, idle."""
    return len(threads) <= 2 and all(t.startswith("vitrine-decode") for t in threads)


def test_uploaded_photos_are_decoded_a_few_at_a_time(settings, small_store, embedder,
                                                      small_catalog, rows, monkeypatch):
    """Each decode may take hundreds of MB (a 40-MP PNG in a small upload): the 40 request
    threads decoding together took gigabytes. At most DECODE_SLOTS decode at once."""
    from vitrine import embed as embed_module
    from vitrine import service as service_module

    monkeypatch.setattr(service_module, "DECODE_SLOTS", 2)
    service = service_module.VitrineService(settings, small_store, embedder)
    most, threads = at_once(monkeypatch, embed_module, "open_image")  # (search's decode)
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    workers = [threading.Thread(target=service.search_photo, args=(photo, 3))
               for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    service.close()
    assert most() == 2 and in_decode_threads(threads)


def test_a_large_decode_gives_its_memory_back_a_small_one_is_not_slowed(settings, small_store,
                                                                         embedder, monkeypatch):
    """What a decode freed is given back to the system (glibc keeps it) after a large photo
    only: trimming after every one cost a small photo's decode 0.4 ms."""
    from vitrine import service as service_module
    from vitrine import service_uploads

    trims = []
    monkeypatch.setattr(service_uploads, "_release_memory", lambda: trims.append(1))
    service = service_module.VitrineService(settings, small_store, embedder)
    try:
        assert service.decoded(lambda x: x + 1, 1) == 2 and trims == []
        assert service.decoded(lambda: threading.Event().wait(
            service_uploads.TRIM_AFTER_S) or "slow") == "slow" and trims == [1]
        with pytest.raises(ValueError):  # (a failed one too)
            service.decoded(lambda: threading.Event().wait(service_uploads.TRIM_AFTER_S)
                            or int("x"))
        assert trims == [1, 1]
    finally:
        service.close()


def test_photo_copies_for_the_pages_are_made_in_the_decode_slots(settings, small_store,
                                                                  embedder, rows, monkeypatch):
    """A card copy (or a TIFF's view copy) decodes the stored photo, for any visitor: four
    40-megapixel ones asked for at once took the server to 5 GB. They share the uploads'
    DECODE_SLOTS."""
    from vitrine import api as api_module
    from vitrine import service as service_module
    from vitrine.api import create_app
    from vitrine.server import running

    monkeypatch.setattr(service_module, "DECODE_SLOTS", 2)
    monkeypatch.setattr(api_module, "SMALL_PHOTO_BYTES", 0)  # every card a copy
    most, threads = at_once(monkeypatch, api_module, "thumbnail_jpeg")
    answers: list[int] = []
    with running(create_app(settings, small_store, embedder=embedder)) as base:
        def fetch(pid: str) -> None:
            answers.append(httpx2.get(f"{base}/images/{pid}", params={"size": "card"},
                                      timeout=60).status_code)

        workers = [threading.Thread(target=fetch, args=(r["product_id"],)) for r in rows[:6]]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert answers == [200] * 6 and most() == 2 and in_decode_threads(threads)


def test_eight_concurrent_clients(settings, small_store, embedder, rows, small_catalog):
    """8 clients × 50 requests of every kind against a real server: all answered, right."""
    from vitrine.server import running

    photos = {r["product_id"]: (small_catalog / r["image"]).read_bytes() for r in rows[::6]}
    ids = [r["product_id"] for r in rows]
    failures: list[str] = []

    def client_run(n: int, base: str) -> None:
        with httpx2.Client(base_url=base, timeout=60) as http:
            for i in range(50):
                pid = ids[(n * 50 + i) % len(ids)]
                kind = (n + i) % 5
                try:
                    if kind == 0:
                        r = http.get("/api/products", params={"limit": 10, "offset": i % 40})
                        ok = r.status_code == 200 and len(r.json()["products"]) >= 8
                    elif kind == 1:
                        r = http.get(f"/api/products/{pid}")
                        ok = r.status_code == 200 and r.json()["product_id"] == pid
                    elif kind == 2:
                        r = http.get(f"/api/products/{pid}/similar", params={"k": 5})
                        got = [x["product_id"] for x in r.json()["results"]]
                        ok = r.status_code == 200 and len(got) == 5 and pid not in got
                    elif kind == 3:
                        r = http.get(f"/images/{pid}")
                        ok = r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
                    else:
                        qid = list(photos)[(n + i) % len(photos)]
                        r = http.post("/api/search", params={"k": 3},
                                      files=_upload(photos[qid]))
                        ok = r.status_code == 200 and r.json()["results"][0]["product_id"] == qid
                except (httpx2.HTTPError, ValueError, KeyError) as exc:
                    r, ok = None, False
                    failures.append(f"client {n} request {i}: {exc!r}")
                if not ok and r is not None:
                    failures.append(f"client {n} request {i}: {r.status_code} {r.text[:200]}")

    app = _app(settings, small_store, embedder)
    with running(app) as base:
        threads = [threading.Thread(target=client_run, args=(n, base)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not any(t.is_alive() for t in threads), "clients did not finish in time"
    assert failures == []


def test_app_over_a_milvus_lite_store(settings, small_store, embedder, tmp_path, rows,
                                      small_catalog, monkeypatch, caplog):
    """The same API over a store that is not a folder: reads, search, and writes once
    VITRINE_UPLOAD_DIR names a folder for the photos."""
    if not IN_CI:
        pytest.importorskip("milvus_lite")
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store
    from vitrine.store.milvus_store import MilvusStore
    from vitrine.web.text import category_label

    uri = f"milvus-lite://{tmp_path}/shop.db"
    source, target = open_store(small_store), open_store(uri, create=True)
    migrate_store(source, target, show_progress=False)
    assert target.catalog_folder() == source.catalog_folder() == str(small_catalog.resolve())
    source.close()
    target.close()
    photo = _jpeg(small_catalog / rows[7]["image"], flip=True)
    auth = {"Authorization": f"Bearer {KEY}"}
    fields = {"product_id": "m-1", "name": "Novo", "price": "10"}

    with TestClient(_app(settings, uri, embedder)) as client:
        pid = rows[0]["product_id"]
        similar = client.get(f"/api/products/{pid}/similar").json()["results"]
        assert len(similar) == 5 and pid not in [x["product_id"] for x in similar]
    # writes open (an API key) with nowhere for their photos: said at start (deleting and
    # editing still work), and an upload is refused before the model's work
    import logging

    from vitrine import service as service_module
    from vitrine import service_writes

    with caplog.at_level(logging.WARNING, logger=service_module.__name__), \
            TestClient(_app(settings, uri, embedder, api_key=KEY)) as client:
        assert "is not a folder; set VITRINE_UPLOAD_DIR" in caplog.text
        with monkeypatch.context() as patch:
            patch.setattr(service_writes, "decode", lambda *a: pytest.fail("decoded"))
            refused = client.post("/api/products", files=_upload(photo), data=fields,
                                  headers=auth)
        assert refused.status_code == 409 and "VITRINE_UPLOAD_DIR" in refused.json()["detail"]
        assert "retry-after" not in refused.headers  # (no retry mends it: not a busy store)

    photos = tmp_path / "photos"
    with TestClient(_app(settings, uri, embedder, api_key=KEY, upload_dir=photos)) as client:
        assert client.post("/api/products", files=_upload(photo), data=fields,
                           headers=auth).status_code == 201
        found = client.post("/api/search", params={"k": 1}, files=_upload(photo)).json()
        assert found["results"][0]["product_id"] == "m-1"
        listed = []  # a page's photo search in a category lists no category (each a scan of
        real = MilvusStore.list_products  # the category on Milvus: 1.2 s at 20,000)
        monkeypatch.setattr(MilvusStore, "list_products",
                            lambda self, **kw: listed.append(kw) or real(self, **kw))
        page = client.post("/search", data={"category": rows[7]["category"]},
                           files=_upload(photo))
        shown = re.findall(r'<span class="category">([^<]+)</span>', page.text)
        same = sum(r["category"] == rows[7]["category"] for r in rows)
        assert page.status_code == 200 and listed == [] and len(shown) == min(same, 10)
        assert set(shown) == {category_label(rows[7]["category"])}
        monkeypatch.undo()
        assert client.get("/images/m-1").content == photo
        edited = client.patch("/api/products/m-1", headers=auth, json={"name": "Editado"})
        assert edited.status_code == 200 and edited.json()["price"] == 10.0
        assert client.get("/api/products/m-1").json()["name"] == "Editado"
        assert len(list(photos.iterdir())) == 1
        assert client.delete("/api/products/m-1", headers=auth).status_code == 204
        assert client.get("/api/products/m-1").status_code == 404
        # a VITRINE_UPLOAD_DIR folder may hold another store's photos too: never cleaned
        assert len(list(photos.iterdir())) == 1


@pytest.mark.parametrize("kind", ["embedded", "milvus-lite"])
def test_a_milvus_catalogue_page_holds_no_other_request(settings, small_store, embedder,
                                                        tmp_path, rows, kind):
    """A catalogue page or name search on Milvus may read its whole catalogue's order (2.5 s
    at 20,000 products on Milvus Lite): it held the service's store lock meanwhile, and a
    product's page asked for then waited as long (1.7 s; 5.8 s at 50,000). Milvus' client
    takes reads from several threads, so a Milvus store is listed without that lock; the
    embedded store's shared SQLite connection and index still need it."""
    from vitrine.service import VitrineService

    location = small_store
    if kind != "embedded":
        if not IN_CI:
            pytest.importorskip("milvus_lite")
        from vitrine.migrate import migrate_store
        from vitrine.store import open_store

        location = f"milvus-lite://{tmp_path}/shop.db"
        source, target = open_store(small_store), open_store(location, create=True)
        migrate_store(source, target, show_progress=False)
        source.close()
        target.close()
    service = VitrineService(settings, location, embedder)
    try:
        free, real = [], service.store.list_products

        def other_request() -> None:  # (a product's page, as the lock lets it in)
            taken = service._store_lock.acquire(blocking=False)
            if taken:
                service._store_lock.release()
            free.append(taken)

        def listing(**kw):
            other = threading.Thread(target=other_request)
            other.start()
            other.join()
            return real(**kw)

        service.store.list_products = listing
        found, _ = service.products(category=None, query=rows[0]["product_id"], limit=50,
                                    offset=0)
        assert rows[0]["product_id"] in {p.product_id for p in found}  # (as before)
        assert free == [kind != "embedded"]
        # counting the categories too (on Milvus it may read the whole order: the first
        # catalogue page after a while, or after a write)
        free.clear()
        real_counts = service.store.categories

        def counting():
            other = threading.Thread(target=other_request)
            other.start()
            other.join()
            return real_counts()

        service.store.categories = counting
        assert sum(service.categories().values()) == len(rows)
        assert free == [kind != "embedded"]
        # a write that lands while a count reads (the count began before it) is not hidden
        # behind that count for CATEGORIES_TTL_S (helper-191)
        service._categories = None

        def written_meanwhile():
            service._forget_categories()  # (what a write through the service does)
            return real_counts()

        service.store.categories = written_meanwhile
        service.categories()
        assert service._categories is None  # counted again at the next read
        service.store.categories = real_counts
        service.categories()
        assert service._categories is not None
        if kind != "embedded":  # (the embedded store is the module's own: not written)
            # a write's category, read again once the write locks are held, is counted
            # outside the store lock too (a PATCH to a new category on Milvus held every
            # read while the catalogue was counted: helper-239)
            free.clear()
            service.store.categories = counting
            service._forget_categories()
            edited = service.edit_product(rows[0]["product_id"], {"category": "Nova"})
            assert edited.category == "Nova" and free == [True]
    finally:
        service.close()


def test_a_shared_upload_folder_keeps_the_photos_another_store_uses(
        settings, small_store, embedder, small_catalog, rows, tmp_path):
    """Two stores with one VITRINE_UPLOAD_DIR: the same photo added to both is one file
    (named by its content); deleting the product from one store deleted the other's photo."""
    photos, auth = tmp_path / "photos", {"Authorization": f"Bearer {KEY}"}
    photo = _jpeg(small_catalog / rows[7]["image"], flip=True)
    clients = []
    for name in ("a", "b"):
        shutil.copytree(small_store, tmp_path / name)
        clients.append(TestClient(_app(settings, tmp_path / name, embedder, api_key=KEY,
                                       upload_dir=photos)))
        assert clients[-1].post("/api/products", files=_upload(photo), headers=auth,
                                data={"product_id": "novo"}).status_code == 201
    assert len(list(photos.iterdir())) == 1
    assert clients[0].delete("/api/products/novo", headers=auth).status_code == 204
    assert clients[1].get("/images/novo").content == photo


def test_cors_lets_the_configured_origins_in(settings, small_store, embedder):
    """An origin written with a slash at the end or in capitals still matches what browsers
    send (``https://loja.com.br``); it never did with the slash. Other origins stay out."""
    from vitrine.api import create_app
    from vitrine.config import Settings

    opened = Settings(weights=settings.weights, cors_origins="https://Loja.com.br/")
    client = TestClient(create_app(opened, small_store, embedder=embedder))
    for origin, allowed in (("https://loja.com.br", True), ("https://evil.example", False)):
        pre = client.options("/api/products/x", headers={
            "Origin": origin, "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type"})
        got = client.get("/api/products", params={"limit": 1}, headers={"Origin": origin})
        if allowed:
            assert pre.status_code == 200 and "PATCH" in pre.headers["access-control-allow-methods"]
            assert got.headers["access-control-allow-origin"] == origin
            exposed = got.headers["access-control-expose-headers"].lower().split(", ")
            assert {"retry-after", "server-timing"} <= set(exposed)
        else:
            assert "access-control-allow-origin" not in pre.headers | got.headers
    # the guards' own refusals (a wrong key, an upload too large from its Content-Length)
    # are readable by the allowed origin's page too, not an opaque network error
    guarded = TestClient(create_app(opened.model_copy(update={
        "api_key": "k", "max_upload_bytes": 1000}), small_store, embedder=embedder))
    origin = {"Origin": "https://loja.com.br"}
    wrong = guarded.delete("/api/products/x", headers={**origin, "Authorization": "Bearer no"})
    big = guarded.post("/api/search", headers=origin,
                       files={"image": ("a.jpg", b"x" * 200_000, "image/jpeg")})
    for refused, status in ((wrong, 401), (big, 413)):
        assert refused.status_code == status
        assert refused.headers["access-control-allow-origin"] == "https://loja.com.br"
    # and so is a server error (its handler runs outside the CORS middleware)
    from vitrine.service import VitrineService

    def broken(_service) -> int:
        raise RuntimeError("a bug")

    failing = TestClient(create_app(opened, small_store, embedder=embedder),
                         raise_server_exceptions=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VitrineService, "count", broken)
        failed = failing.get("/healthz", headers=origin)
        other = failing.get("/healthz", headers={"Origin": "https://evil.example"})
    assert failed.status_code == 500
    assert failed.headers["access-control-allow-origin"] == "https://loja.com.br"
    assert other.status_code == 500 and "access-control-allow-origin" not in other.headers
    # a 503 of that handler tells the page when to retry: Retry-After is exposed, as the
    # middleware's own answers expose it (it was not: the page could not read it)
    import sqlite3

    def unreadable(_service) -> int:
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VitrineService, "count", unreadable)
        busy = failing.get("/healthz", headers=origin)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "retry-after" in busy.headers["access-control-expose-headers"].lower()


def test_a_request_cut_off_as_the_server_stops_is_readable_cross_origin(settings, small_store,
                                                                         embedder):
    """The stopping server's 503 (and its 200 "saved") is made outside the CORS middleware:
    a shop's page read it as a network error, not a 503 to retry or a write that was
    saved. The guard `vitrine serve` wraps the app in gets the app's origins."""
    import asyncio

    from vitrine.server import _server

    guarded = _server(_app(settings, small_store, embedder,
                           cors_origins=["https://loja.com.br"]), "warning").config.app

    async def app(scope, receive, send):  # (the request cut off)
        raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    for origin, allowed in (("https://loja.com.br", True), ("https://evil.example", False)):
        sent: list[dict] = []

        async def send(message, sent=sent):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/search",
                 "headers": [(b"origin", origin.encode())]}
        guarded.app = app
        asyncio.run(guarded(scope, receive, send))
        headers = {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]}
        assert sent[0]["status"] == 503
        if allowed:
            assert headers["access-control-allow-origin"] == origin
            assert "retry-after" in headers["access-control-expose-headers"].lower()
        else:
            assert "access-control-allow-origin" not in headers


def test_health_fails_when_the_store_is_gone_or_its_database_fails(settings, small_store,
                                                                     embedder, tmp_path):
    """/healthz said "ok" with a store folder deleted or moved away (reads served the
    deleted file, writes were 409s), and a database failing under the server (damaged, or
    a read-only replica's file rewritten) was a 500 "Something went wrong"; both are 503s
    that say so."""
    from vitrine.api import create_app
    from vitrine.service import VitrineService

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    client = TestClient(create_app(settings, store, embedder=embedder),
                        raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200

    def damaged(*args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VitrineService, "products", damaged)
        failed = client.get("/api/products")
    assert failed.status_code == 503 and failed.headers["retry-after"] == "5"
    assert failed.json()["detail"].startswith("The store's database cannot be read right now")

    def locked(*args, **kwargs):  # the store's folder made unreadable under the server
        raise PermissionError(13, "Permission denied", str(store / "index.2.flat.faiss"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VitrineService, "products", locked)
        refused = client.get("/api/products")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["detail"].startswith("The server is denied a file it needs")
    real_stat = Path.stat

    def shut(self: Path, *args, **kwargs):  # (root enters any folder: pathlib plays it)
        if self.name == "vitrine.sqlite":
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # the folder shut, not gone
        patch.setattr(Path, "stat", shut)
        denied = client.get("/healthz")
    assert denied.status_code == 503 and denied.headers["retry-after"] == "5"
    assert denied.json()["detail"].startswith("The server is denied a file it needs")
    store.rename(tmp_path / "moved")
    gone = client.get("/healthz")
    assert gone.status_code == 503 and "The store is gone" in gone.json()["detail"]
    assert gone.headers["retry-after"] == "5"  # (as every other 503: helper-151)


def test_a_photo_that_cannot_be_saved_is_one_sentence(tmp_path, monkeypatch):
    """A full disk while saving an uploaded photo: a StoreError sentence (409), and the
    half-written temporary file is gone (it used to be a 500 that left it behind)."""
    from vitrine.errors import StoreError
    from vitrine.store import save_photo

    def full_disk(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    folder = tmp_path / "uploads"
    with pytest.raises(StoreError, match=r"No space left on device\); nothing was written"):
        save_photo(folder, folder / "abc.jpg", b"x" * 100)
    assert list(folder.iterdir()) == []


def test_a_category_typed_in_either_accent_form_filters_the_api(writable, small_catalog, rows):
    """The store writes "Relógio" composed; an address or form from a Mac may hold it
    decomposed, which found nothing."""
    import unicodedata

    client, store = writable
    decomposed = unicodedata.normalize("NFD", "Relógio")
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    added = client.post("/api/products", headers={"Authorization": f"Bearer {KEY}"},
                        data={"product_id": "r1", "category": decomposed},
                        files=_upload(photo))
    assert added.status_code == 201 and added.json()["category"] == "Relógio"
    for typed in ("Relógio", decomposed):
        listed = client.get("/api/products", params={"category": typed}).json()["products"]
        assert [p["product_id"] for p in listed] == ["r1"], typed
        found = client.post("/api/search", params={"category": typed}, files=_upload(photo))
        assert [r["product_id"] for r in found.json()["results"]] == ["r1"], typed
        both = client.post("/api/search", params={"category": typed},
                           data={"category": "Relógio"}, files=_upload(photo))
        assert both.status_code == 200, typed  # one category, written two ways
        page = client.get("/", params={"category": typed}).text  # the count and the choice
        assert "1 produto<" in page and '<option value="Relógio" selected>' in page, typed
        form = client.get("/search", params={"category": typed}).text
        assert '<option value="Relógio" selected>' in form, typed
    # in another case or without its accents, as `vitrine similar --category` and the pages
    # find it (the API alone found nothing: helper-220)
    auth = {"Authorization": f"Bearer {KEY}"}
    for typed in ("relogio", " RELÓGIO "):
        listed = client.get("/api/products", params={"category": typed}).json()["products"]
        assert [p["product_id"] for p in listed] == ["r1"], typed
        found = client.post("/api/search", params={"category": typed}, files=_upload(photo))
        assert [r["product_id"] for r in found.json()["results"]] == ["r1"], typed
        similar = client.get(f"/api/products/{rows[1]['product_id']}/similar",
                             params={"category": typed}).json()["results"]
        assert [r["product_id"] for r in similar] == ["r1"], typed
    # two categories so spelled (a catalogue's: a product written through the API joins
    # the one it names): neither is guessed, the filter as written finds its own
    assert client.post("/api/products", headers=auth, files=_upload(photo),
                       data={"product_id": "r2", "category": "zz"}).status_code == 201
    from vitrine.store import open_store

    other = open_store(store)
    try:
        other.update_metadata([other.get("r2").to_product(category="relogio")])
    finally:
        other.close()
    for typed, wanted in (("RELOGIO", []), ("relogio", ["r2"]), ("Relógio", ["r1"])):
        listed = client.get("/api/products", params={"category": typed}).json()["products"]
        assert [p["product_id"] for p in listed] == wanted, typed


def test_a_store_indexed_anew_under_the_server_is_read_from_then(writable, demo_catalog,
                                                                 embedder, tmp_path, caplog):
    """The store deleted and indexed again while the server runs: it kept reading the old,
    unlinked database (its product count forever) while its writes went to the new one, so a
    product it had just changed answered 404."""
    from conftest import copy_subset

    from vitrine.indexer import index_catalog
    from vitrine.manifest import ModelManifest
    from vitrine.store import open_store

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/healthz").json()["products"] == 48
    for leftover in store.glob("vitrine.sqlite*"):
        leftover.unlink()
    catalog = copy_subset(demo_catalog, tmp_path / "other", 1, offset=7)
    fresh = open_store(store, create=True)
    index_catalog(catalog, fresh, embedder, show_progress=False)
    fresh.close()
    pid = next(iter(_rows(catalog)))["product_id"]
    # each kind of read follows, the first request whatever it is
    assert client.get(f"/api/products/{pid}/similar?k=3").status_code == 200
    photo = _jpeg(catalog / next(iter(_rows(catalog)))["image"])
    found = client.post("/api/search?k=1", files=_upload(photo)).json()["results"]
    assert found[0]["product_id"] == pid
    assert client.get("/healthz").json()["products"] == 8
    edited = client.patch(f"/api/products/{pid}", headers=auth, json={"name": "Novo nome"})
    assert edited.status_code == 200, edited.text
    assert client.get(f"/api/products/{pid}").json()["name"] == "Novo nome"
    assert len(client.get("/api/products?limit=100").json()["products"]) == 8
    # indexed anew by another model: refused, as a server started on it is
    for leftover in store.glob("vitrine.sqlite*"):
        leftover.unlink()
    fresh = open_store(store, create=True)
    fresh.set_manifest(ModelManifest("other", "0" * 64, {"size": 8}, 8, "trained:hidden"))
    fresh.set_model_folder("/srv/secret-models/other")
    fresh.close()
    # a read the store cannot answer is a 503 (no request mends it; /healthz said 409,
    # which a load balancer reads as the prober's fault), a write the store refuses a 409;
    # the sentence names neither the store's path nor the model folder it recorded (nor the
    # command line's options: helper-221), which the server's log does
    refused = client.get(f"/api/products/{pid}")
    assert refused.status_code == 503 and "another model" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "5"
    assert str(store) not in refused.text and f"store {store.name} " in refused.text
    assert "secret-models" not in refused.text and "--" not in refused.text
    assert [r.message for r in caplog.records if "secret-models" in r.getMessage()]
    assert client.get("/healthz").status_code == 503
    for lang, said in (("pt", "O catálogo não está disponível agora."),
                       ("en", "The catalogue is not available right now.")):
        page = client.get(f"/?lang={lang}", headers={"Accept": "text/html"})
        # the page's own sentence, not the API's (backbone, weights, --store: a shopper's
        # page showed them in English)
        assert page.status_code == 503 and said in page.text and "--store" not in page.text
    write = client.patch(f"/api/products/{pid}", headers=auth, json={"name": "Outro"})
    assert write.status_code == 409 and "another model" in write.json()["detail"]
    assert "secret-models" not in write.text
    added = client.post("/api/products", headers=auth, files=_upload(photo),
                        data={"product_id": "novo/1", "category": "novo"})
    assert added.status_code == 409 and "another model" in added.json()["detail"]
    assert "secret-models" not in added.text and "--" not in added.text


def test_a_link_to_the_store_pointed_at_another_store_is_followed(settings, small_store,
                                                                   embedder, small_catalog,
                                                                   rows, tmp_path):
    """A store served through a link to its release (`current -> releases/a`), the link
    then pointed at another release (`ln -sfn b current`): the server read the old store
    for good while its writes went to the new one, the uploaded photo into the old one's
    folder, and /healthz said the old count (helper-222). It follows the link's store, as a
    store deleted and indexed anew."""
    from vitrine.store import open_store

    releases = tmp_path / "releases"
    shutil.copytree(small_store, releases / "a")
    shutil.copytree(small_store, releases / "b")
    gone = rows[0]["product_id"]
    other = open_store(releases / "b")
    other.lock_for_writing()
    assert other.delete([gone]) == 1
    other.close()
    (tmp_path / "current").symlink_to(releases / "a")
    client = TestClient(_app(settings, tmp_path / "current", embedder, api_key=KEY))
    assert client.get("/healthz").json()["products"] == 48
    (tmp_path / "next").symlink_to(releases / "b")
    os.replace(tmp_path / "next", tmp_path / "current")  # (ln -sfn, atomically)
    assert client.get("/healthz").json()["products"] == 47
    assert client.get(f"/api/products/{gone}").status_code == 404
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    added = client.post("/api/products", files=_upload(photo), data={"product_id": "novo"},
                        headers={"Authorization": f"Bearer {KEY}"})
    assert added.status_code == 201, added.text
    assert client.get("/api/products/novo").status_code == 200
    stored = open_store(releases / "b").get("novo")
    assert Path(stored.image).parent == releases / "b" / "uploads"  # (not the old store's)
    assert not (releases / "a" / "uploads").exists()
    (tmp_path / "current").unlink()  # the link gone: so is the store (it said ok)
    assert client.get("/healthz").status_code == 503
    client.close()


def test_a_new_database_that_cannot_be_read_yet_is_tried_once_a_second(settings, small_store,
                                                                        embedder, tmp_path,
                                                                        monkeypatch):
    """A read-only replica whose writer is running sees the database changed but cannot
    open it yet (its last writes in the WAL): every request tried to open it again, holding
    every read meanwhile. It is tried again once a second; until then the open one serves."""
    import time as clock

    from vitrine.errors import StoreError
    from vitrine.service import FOLLOW_RETRY_SECONDS, VitrineService

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    service = VitrineService(settings, store, embedder)
    tries = []

    def not_yet(self):
        tries.append(1)
        raise StoreError("the store is read-only here and its last writes may be in …")

    monkeypatch.setattr(type(service._store), "replaced", lambda self: True)
    monkeypatch.setattr(VitrineService, "_open", not_yet)
    now = clock.monotonic()
    monkeypatch.setattr(clock, "monotonic", lambda: now)  # (however slow the machine)
    assert [service.count() for _ in range(20)] == [48] * 20 and len(tries) == 1
    monkeypatch.setattr(clock, "monotonic", lambda: now + FOLLOW_RETRY_SECONDS + 0.1)
    assert service.count() == 48 and len(tries) == 2
    service.close()


def test_a_photo_search_checks_the_model_of_a_store_that_named_none_at_start(
        settings, embedder, rows, small_catalog, tmp_path):
    """A server started on a store that named no model yet (its first `index` still
    running, or killed before the model was recorded) searched photos with its own model
    against vectors another model made afterwards: wrong results, 200. Refused (503) as at
    start, once the store names another model; the same model searches."""
    from vitrine.catalog import Product
    from vitrine.manifest import ModelManifest
    from vitrine.store import open_store
    from vitrine.store.base import Record

    store = tmp_path / "store"
    open_store(store, create=True).close()  # a database, no model yet
    client = TestClient(_app(settings, store, embedder))
    photo = _jpeg(small_catalog / rows[0]["image"])
    assert client.post("/api/search?k=1", files=_upload(photo)).json()["results"] == []
    other = ModelManifest("other", "0" * 64, {"size": 8}, embedder.manifest.dim)
    vector = np.zeros(embedder.manifest.dim, np.float32)
    vector[0] = 1
    writer = open_store(store)
    writer.set_manifest(other)  # (what an index with another model records first)
    writer.upsert([Record(Product("p", small_catalog / rows[0]["image"]), "0" * 64, "0" * 16,
                          b"\0" * 768, vector)])
    writer.close()
    refused = client.post("/api/search?k=1", files=_upload(photo))
    assert refused.status_code == 503 and "another model" in refused.json()["detail"]
    client.close()
    # the store's own model: searched
    for leftover in store.glob("vitrine.sqlite*"):
        leftover.unlink()
    open_store(store, create=True).close()
    client = TestClient(_app(settings, store, embedder))
    writer = open_store(store)
    writer.set_manifest(embedder.manifest)
    writer.upsert([Record(Product("p", small_catalog / rows[0]["image"]), "0" * 64, "0" * 16,
                          b"\0" * 768, vector)])
    writer.close()
    found = client.post("/api/search?k=1", files=_upload(photo))
    assert [r["product_id"] for r in found.json()["results"]] == ["p"]
    client.close()


def test_an_upload_folder_inside_the_catalogue_adds_no_products_to_it(
        settings, embedder, demo_catalog, tmp_path):
    """VITRINE_UPLOAD_DIR inside the catalogue folder: the next `vitrine index` took each
    photo added through the API for a catalogue photo, a second product of a category
    named after the folder."""
    from conftest import copy_subset

    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)
    photos, store = catalog / "fotos_api", tmp_path / "store"
    db = open_store(store, create=True)
    assert index_catalog(catalog, db, embedder, show_progress=False).indexed == 8
    db.close()
    client = TestClient(_app(settings, store, embedder, api_key=KEY, upload_dir=photos))
    first = next(iter(_rows(catalog)))
    added = client.post("/api/products", files=_upload(_jpeg(catalog / first["image"],
                                                             flip=True)),
                        headers={"Authorization": f"Bearer {KEY}"},
                        data={"product_id": "novo", "category": "bolsas"})
    assert added.status_code == 201 and len(list(photos.iterdir())) == 1
    db = open_store(store)
    again = index_catalog(catalog, db, embedder, show_progress=False, uploads=photos)
    assert (again.indexed, again.unlisted, again.uploaded) == (0, 0, 1)
    assert db.count() == 9 and db.categories().get("fotos_api") is None
    db.close()
    # the folder of a category, its photos named as the shop named them: the shop's (a
    # VITRINE_UPLOAD_DIR set so removed the category from the store, exit 0: helper-230)
    shop = copy_subset(demo_catalog, tmp_path / "shop", 2)
    (shop / "products.csv").unlink()  # (a row of a table is the shop's: kept before too)
    db = open_store(tmp_path / "shop-store", create=True)
    assert index_catalog(shop, db, embedder, show_progress=False).indexed == 16
    held = db.categories()
    again = index_catalog(shop, db, embedder, show_progress=False,
                          uploads=(shop / first["image"]).parent)
    assert (again.removed, again.unchanged) == (0, 16) and db.categories() == held
    db.close()


def test_store_errors_name_the_store_by_its_folders_name(tmp_path, monkeypatch):
    """A store given as "." blanked every dot of the sentence; a Milvus Lite file kept its
    whole path."""
    from vitrine.api_errors import hide_folders

    shop = tmp_path / "loja"
    shop.mkdir()
    monkeypatch.chdir(shop)
    said = f"the store {shop} is read-only here (index.3.faiss)."
    for given in (".", "./", str(shop), "../loja"):
        assert hide_folders(said, given) == "the store loja is read-only here (index.3.faiss)."
    lite = f"milvus-lite://{tmp_path}/m.db"
    assert hide_folders(f"no Vitrine store at {lite}.", lite) == "no Vitrine store at " \
                                                                 "milvus-lite://m.db."
    server = "milvus://db.example:19530"
    assert hide_folders(f"cannot open {server}.", server) == f"cannot open {server}."


def test_a_product_the_store_cannot_hold_is_a_422_and_nothing_is_written(writable, small_catalog,
                                                                        rows, monkeypatch):
    """A field longer than the store keeps (a Milvus server's byte limits: 200 emoji fill
    800 bytes of a 512-byte category) was a MilvusException, a 500; now the store's reason
    is the 422's sentence, before the photo is saved or the product written."""
    from vitrine.store.embedded import EmbeddedStore

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    monkeypatch.setattr(EmbeddedStore, "too_long", lambda self, p: (
        "its category is 800 bytes long, more than a Milvus store holds (512)"
        if p.category.startswith("😀") else None))
    photo = _jpeg(small_catalog / rows[5]["image"], flip=True)
    fields = {"product_id": "emoji", "name": "Sapato", "category": "😀" * 200}
    refused = client.post("/api/products", files=_upload(photo), data=fields, headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == ("Product 'emoji': its category is 800 bytes long, more "
                                        "than a Milvus store holds (512).")
    assert client.get("/api/products/emoji").status_code == 404
    assert not (store / "uploads").exists() or not list((store / "uploads").iterdir())
    pid = rows[0]["product_id"]
    edited = client.patch(f"/api/products/{pid}", json={"category": "😀" * 200}, headers=auth)
    assert edited.status_code == 422 and "800 bytes" in edited.json()["detail"]
    assert client.get(f"/api/products/{pid}").json()["category"] == rows[0]["category"]


def test_an_id_in_either_unicode_form_is_the_same_product(writable, small_catalog, rows):
    """A product added as "relo\u0301gio-1" (decomposed, as a Mac's file names make ids) is
    read, edited, replaced and deleted through the id typed composed: before, reading found
    it but editing and deleting answered 404, and adding made a second product."""
    import unicodedata

    client, _ = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    stored_id = unicodedata.normalize("NFD", "relógio-1")
    typed = unicodedata.normalize("NFC", stored_id)
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    added = client.post("/api/products", files=_upload(photo), headers=auth,
                        data={"product_id": stored_id, "name": "Relógio"})
    assert added.status_code == 201 and added.json()["product_id"] == stored_id
    count = client.get("/healthz").json()["products"]
    assert client.get(f"/api/products/{typed}").json()["product_id"] == stored_id
    assert client.get(f"/images/{typed}").content == photo
    similar = client.get(f"/api/products/{typed}/similar", params={"k": 100}).json()
    assert stored_id not in [x["product_id"] for x in similar["results"]]
    edited = client.patch(f"/api/products/{typed}", json={"name": "Relógio novo"},
                          headers=auth)
    assert edited.status_code == 200 and edited.json()["product_id"] == stored_id
    replaced = client.post("/api/products", files=_upload(photo), headers=auth,
                           data={"product_id": typed, "name": "Relógio trocado"})
    assert replaced.status_code == 200 and replaced.json()["product_id"] == stored_id
    assert client.get("/healthz").json()["products"] == count
    assert client.delete(f"/api/products/{typed}", headers=auth).status_code == 204
    assert client.get(f"/api/products/{stored_id}").status_code == 404
    assert client.get("/healthz").json()["products"] == count - 1


def test_a_request_cancelled_as_the_server_stops_is_a_503():
    """uvicorn cancels a request still running once its graceful shutdown time is over (a
    slow upload during Ctrl+C or SIGTERM): it answered a plain-text 500 and logged a
    traceback, a bug's signs. The client is told the server is stopping; a response already
    started is cut as before."""
    import asyncio

    from vitrine.web.guards import Stopping

    def run(started: bool) -> list[dict]:
        sent: list[dict] = []

        async def app(scope, receive, send):
            if started:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/search", "headers": []}
        asyncio.run(Stopping(app)(scope, receive, send))
        return sent

    start, body = run(False)
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 503 and headers["retry-after"] == "5"
    assert json.loads(body["body"]) == {"detail": "The server is stopping; try again in a "
                                                  "moment."}
    with pytest.raises(asyncio.CancelledError):
        run(True)

    async def cancelled_for_real() -> int:  # as uvicorn does: the task itself cancelled
        sent: list[dict] = []

        async def slow(scope, receive, send):
            await asyncio.sleep(60)

        async def served() -> int:
            scope = {"type": "http", "method": "POST", "path": "/api/search", "headers": []}
            await Stopping(slow)(scope, None, lambda m: asyncio.sleep(0, sent.append(m)))
            return asyncio.current_task().cancelling()  # (0: the cancellation spent)

        task = asyncio.create_task(served())
        await asyncio.sleep(0.01)
        task.cancel()
        left = await task
        assert sent[0]["status"] == 503
        return left

    assert asyncio.run(cancelled_for_real()) == 0


def _photo_form(fields: dict[str, str], photo: bytes) -> tuple[bytes, bytes]:
    """A multipart form's body with ``fields`` and the photo in 'image', and its type."""
    body = _form([*((name, None, value.encode()) for name, value in fields.items()),
                  ("image", "photo.jpg", photo)], boundary="vitrine-cut-off-test")
    return body, b"multipart/form-data; boundary=vitrine-cut-off-test"


def _cut_off(app, method: str, path: str, body: bytes, headers: list, reached,
             query: bytes = b"", settle=None, partial: bool = False) -> list[dict]:
    """Serve one request through ``vitrine serve``'s stopping guard and cancel it, as uvicorn
    does once its graceful shutdown time is over, when ``reached`` (a threading.Event) is
    set: the endpoint's worker thread got there; with ``partial``, ``body`` is the start of
    a slow upload, and ``reached`` is set when the rest is waited for. ``settle`` (async)
    runs after the cancel; the messages sent back are returned."""
    import asyncio

    from vitrine.server import _server

    guarded = _server(app, "warning").config.app  # (Stopping, as `serve` wraps the app)
    sent: list[dict] = []
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": partial}
        if partial:
            reached.set()
        await asyncio.Event().wait()  # (the rest of a slow upload; a client that waits)

    async def send(message):
        sent.append(message)

    async def serve_and_cancel() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": query, "root_path": "",
                 "headers": [(b"host", b"testserver"), *headers],
                 "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
        task = asyncio.create_task(guarded(scope, receive, send))
        assert await asyncio.to_thread(reached.wait, 60)
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if settle is not None:
            await settle(sent)
        await task

    asyncio.run(serve_and_cancel())
    return sent


def _answer(sent: list[dict]) -> tuple[int, dict[str, str], bytes]:
    start, *bodies = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


def _held(monkeypatch, module, name: str, arrivals: threading.Semaphore | None = None
          ) -> tuple[threading.Event, threading.Event]:
    """Replace ``module.name`` by a version that says it was reached, then waits to be let
    go (``reached``, ``go``) before it does its work; ``arrivals`` is released at each call
    (to wait for several)."""
    reached, go = threading.Event(), threading.Event()
    real = getattr(module, name)

    def held(*args, **kwargs):
        if arrivals is not None:
            arrivals.release()
        reached.set()
        go.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, held)
    return reached, go


def _watch_writes(monkeypatch) -> tuple[list, threading.Event]:
    """What each of the service's writes ended with (None: done; else its exception), and an
    event set as one ends: its worker thread runs on after the request is answered."""
    from vitrine.service import VitrineService

    ended: list = []
    done = threading.Event()

    def watching(original):
        def watched(self, *args, **kwargs):
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                ended.append(exc)
                raise
            else:
                ended.append(None)
                return result
            finally:
                done.set()
        return watched

    for name in ("add_product", "edit_product", "delete_product"):
        monkeypatch.setattr(VitrineService, name, watching(getattr(VitrineService, name)))
    return ended, done


def test_a_write_cut_off_by_the_server_stopping_before_its_change_changes_nothing(
        writable, small_catalog, rows, monkeypatch):
    """A write cut off as the server stopped was answered 503 to try again, and its worker
    thread, which cannot be cancelled, saved it afterwards (a client that did not retry
    believed the product missing; a DELETE retried was a 404). Now a 503 means nothing
    changed: the write, reaching the store after the answer, is not made, and its photo is
    not left in the uploads."""
    import vitrine.service_writes

    client, store = writable
    count = client.get("/healthz").json()["products"]
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    body, kind = _photo_form({"product_id": "cut-off-1", "name": "Cortado"}, photo)
    ended, done = _watch_writes(monkeypatch)
    # (the thread still on its way to the store)
    reached, go = _held(monkeypatch, vitrine.service_writes, "check_manifest")

    async def answered_then_go_on(sent):
        import asyncio

        while not sent:  # the answer comes first; the worker thread then goes on
            await asyncio.sleep(0.01)
        go.set()

    sent = _cut_off(client.app, "POST", "/api/products", body,
                    [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", kind),
                     (b"content-length", str(len(body)).encode())], reached,
                    settle=answered_then_go_on)
    status, headers, answer = _answer(sent)
    assert status == 503 and headers["retry-after"] == "5"
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(answer) == {"detail": "The server is stopping; try again in a moment."}
    assert done.wait(60)
    assert client.get("/api/products/cut-off-1").status_code == 404
    assert client.get("/healthz").json()["products"] == count
    uploads = store / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    from vitrine.write_ticket import WriteCancelled  # (the write refused, said so)

    assert len(ended) == 1 and isinstance(ended[0], WriteCancelled)


def test_a_browser_search_cut_off_by_the_server_stopping_is_a_page_in_its_language(
        client, small_catalog, rows):
    """The search form sent without JavaScript (a slow upload) cut off as the server stopped
    was answered raw JSON: a browser's request gets the 503 as a page, in its language."""
    photo = _jpeg(small_catalog / rows[3]["image"])
    body, kind = _photo_form({"category": ""}, photo)
    for query, lang, sentence in (
            (b"", "pt-BR", "O catálogo não está disponível agora. Tente de novo em instantes."),
            (b"lang=en", "en", "The catalogue is not available right now. Try again in a "
                                "moment.")):
        sent = _cut_off(client.app, "POST", "/search", body[:len(body) // 2],
                        [(b"accept", b"text/html,application/xhtml+xml,*/*;q=0.8"),
                         (b"content-type", kind), (b"content-length", str(len(body)).encode())],
                        threading.Event(), query=query, partial=True)
        status, headers, page = _answer(sent)
        html = page.decode()
        assert status == 503 and headers["content-type"].startswith("text/html"), html
        assert headers["retry-after"] == "5" and headers["connection"] == "close"
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert f'<html lang="{lang}">' in html and sentence in html
    # the API's search, cut off so, is still told in JSON
    sent = _cut_off(client.app, "POST", "/api/search", body[:len(body) // 2],
                    [(b"accept", b"text/html"), (b"content-type", kind),
                     (b"content-length", str(len(body)).encode())],
                    threading.Event(), partial=True)
    status, headers, answer = _answer(sent)
    assert status == 503 and json.loads(answer) == {
        "detail": "The server is stopping; try again in a moment."}


def test_a_write_cut_off_by_the_server_stopping_after_its_change_says_it_was_saved(
        writable, small_catalog, rows, monkeypatch):
    """A write whose change was made before the server cut it off (or while it was being
    made: the answer waits for it) is not told to try again: the answer says it was saved,
    and where to read it."""
    import asyncio

    import vitrine.api_routes
    import vitrine.service_writes

    client, store = writable
    auth = [(b"authorization", f"Bearer {KEY}".encode())]
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    body, kind = _photo_form({"product_id": "cut off/2", "name": "Salvo"}, photo)
    form = [*auth, (b"content-type", kind), (b"content-length", str(len(body)).encode())]
    ended, done = _watch_writes(monkeypatch)

    # cut off once the change was made (the thread on its way to the answer)
    reached, go = _held(monkeypatch, vitrine.api_routes, "product_out")
    sent = _cut_off(client.app, "POST", "/api/products", body, form, reached)
    go.set()
    status, headers, answer = _answer(sent)
    said = json.loads(answer)
    assert status == 200 and "retry-after" not in headers, said
    assert said["saved"] is True and said["product_id"] == "cut off/2"
    assert "try again" not in said["detail"] and "was saved" in said["detail"]
    assert "GET /api/products/cut%20off%2F2" in said["detail"]
    assert done.wait(60) and ended == [None]
    assert client.get("/api/products/cut off%2F2").json()["name"] == "Salvo"

    # cut off while the change is being made: the answer waits for it, then says it
    done.clear()
    reached, go = _held(monkeypatch, vitrine.service_writes, "save_photo")

    async def waited(sent):
        await asyncio.sleep(0.2)
        assert sent == []  # (no answer while the change is being made)
        go.set()

    body, kind = _photo_form({"product_id": "cut-off-3", "name": "Esperado"}, photo)
    sent = _cut_off(client.app, "POST", "/api/products", body,
                    [*auth, (b"content-type", kind),
                     (b"content-length", str(len(body)).encode())], reached, settle=waited)
    status, _, answer = _answer(sent)
    assert status == 200 and json.loads(answer)["product_id"] == "cut-off-3"
    assert done.wait(60) and ended == [None, None]
    assert client.get("/api/products/cut-off-3").json()["name"] == "Esperado"

    # a DELETE cut off after its change: deleted, said so
    done.clear()
    # (after the change: the photo's cleanup)
    reached, go = _held(monkeypatch, vitrine.service_writes, "_remove_orphan")
    sent = _cut_off(client.app, "DELETE", "/api/products/cut-off-3", b"", auth, reached)
    go.set()
    status, _, answer = _answer(sent)
    assert status == 200 and "was deleted" in json.loads(answer)["detail"]
    assert done.wait(60) and ended == [None, None, None]
    assert client.get("/api/products/cut-off-3").status_code == 404


def test_a_category_written_as_the_store_has_it_in_another_case_joins_it(writable,
                                                                         small_catalog, rows):
    """The pages' label of salto_feminino, "Salto feminino", sent with a new product made a
    second category beside it, the two listed apart and a filter by either spelling finding
    neither (helper-230): it joins the one the store has; a spelling of two is refused (422,
    naming them); the one product of a category may respell it."""
    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    heels = len(client.get("/api/products", params={"category": "salto_feminino"}).json()[
        "products"])

    def add(pid, category):
        return client.post("/api/products", headers=auth, files=_upload(photo),
                           data={"product_id": pid, "category": category})

    for pid, typed in (("s1", "Salto feminino"), ("s2", " SALTO_FEMININO ")):
        added = add(pid, typed)
        assert added.status_code == 201 and added.json()["category"] == "salto_feminino"
    edited = client.patch("/api/products/s1", headers=auth, json={"category": "Salto Feminino"})
    assert edited.status_code == 200 and edited.json()["category"] == "salto_feminino"
    listed = client.get("/api/products", params={"category": "salto_feminino"}).json()
    assert len(listed["products"]) == heels + 2
    options = re.findall(r'<option value="([^"]*)"', client.get("/search").text)
    assert sum(option.casefold().startswith("salto") for option in options) == 1
    # the one product of a category respells it; then two spellings: the next is refused
    assert add("r1", "relogio").json()["category"] == "relogio"
    assert client.patch("/api/products/r1", headers=auth,
                        json={"category": "Relógio"}).json()["category"] == "Relógio"
    assert add("r2", "relogio").json()["category"] == "Relógio"
    # (a replacement of a category's one product may respell it too, as the PATCH did)
    assert add("q1", "quadro").json()["category"] == "quadro"
    assert add("q1", "Quadro").json()["category"] == "Quadro"
    # twins the catalogue made (a table's "SALTO_FEMININO" beside the folder's): refused
    from vitrine.store import open_store

    other = open_store(store)
    try:
        twin = other.list_products(category="salto_feminino", limit=1)[0]
        other.update_metadata([twin.to_product(category="SALTO_FEMININO")])
    finally:
        other.close()
    refused = add("s3", "salto feminino")
    assert refused.status_code == 422, refused.text
    assert "'SALTO_FEMININO' and 'salto_feminino'" in refused.json()["detail"]
    assert client.get("/api/products/s3").status_code == 404


def test_two_uploads_of_a_new_category_in_two_spellings_at_once_make_one(
        writable, small_catalog, rows, monkeypatch):
    """Two products of a category the store did not have, sent at once as "Lâmpada" and
    "lampada": each looked for the category before either was written, found none, and the
    two were stored apart (twins the pages list twice). The second joins the first's."""
    import vitrine.service_writes

    client, _ = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    checked, both_checked = [], threading.Event()
    real_check = vitrine.service_writes._check_fits

    def check_fits(*args, **kwargs):  # (each upload, its category looked up, before its write)
        checked.append(1)
        if len(checked) == 2:
            both_checked.set()
        return real_check(*args, **kwargs)

    monkeypatch.setattr(vitrine.service_writes, "_check_fits", check_fits)
    reached, go = _held(monkeypatch, vitrine.service_writes, "save_photo")  # the first, writing
    answers = {}

    def add(pid, category):
        answers[pid] = client.post("/api/products", headers=auth, files=_upload(photo),
                                   data={"product_id": pid, "category": category})

    first = threading.Thread(target=add, args=("l1", "Lâmpada"))
    second = threading.Thread(target=add, args=("l2", "lampada"))
    try:
        first.start()
        assert reached.wait(60)
        second.start()
        assert both_checked.wait(60)  # the second looked before the first was written
    finally:
        go.set()
        for thread in (first, second):
            if thread.is_alive():
                thread.join(60)
    assert answers["l1"].status_code == answers["l2"].status_code == 201, answers
    assert {a.json()["category"] for a in answers.values()} == {"Lâmpada"}
    options = re.findall(r'<option value="([^"]*)"', client.get("/search").text)
    assert [o for o in options if o.casefold().startswith(("lâ", "la"))] == ["Lâmpada"]


def test_photo_searches_beyond_those_taken_at_once_are_refused_and_pages_go_on(
        settings, small_store, embedder, small_catalog, rows, monkeypatch):
    """A hundred photo searches sent together held every request thread, waiting for the
    decoding slots and the model: pages and /healthz waited a minute (helper-238). Past
    SEARCHES_AT_ONCE a search is refused at once, 503 with Retry-After (a page for a
    browser), and the others' requests are answered meanwhile; once one ends, the next is
    taken."""
    import vitrine.service

    monkeypatch.setattr(vitrine.service, "SEARCHES_AT_ONCE", 2)
    client = TestClient(_app(settings, small_store, embedder))
    photo = (small_catalog / rows[0]["image"]).read_bytes()
    arrived = threading.Semaphore(0)  # (each search taken waits in its decode until let go)
    _, go = _held(monkeypatch, vitrine.service, "decode_query", arrived)
    answers: list = []

    def search() -> None:
        answers.append(client.post("/api/search", files=_upload(photo)))

    held = [threading.Thread(target=search) for _ in range(2)]
    try:
        for thread in held:
            thread.start()
        assert arrived.acquire(timeout=60) and arrived.acquire(timeout=60)  # both taken
        refused = client.post("/api/search", files=_upload(photo))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert refused.json() == {"detail": "The server has too many photo searches under "
                                            "way; try again in a moment."}
        for lang, said in (("pt", "buscas por foto demais"), ("en", "too many photo searches")):
            page = client.post("/search", files=_upload(photo), params={"lang": lang},
                               headers={"Accept": "text/html"})  # (the form without script)
            part = client.post("/search", files=_upload(photo),  # (the page's script)
                               params={"lang": lang, "fragment": 1})
            for answer in (page, part):
                assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
                assert said in answer.text and 'role="alert"' in answer.text, answer.text
            assert "<html" in page.text and "<html" not in part.text
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/products", params={"limit": 1}).status_code == 200
        assert answers == []  # (the two taken still under way)
    finally:
        go.set()
        for thread in held:
            thread.join(60)
    assert [a.status_code for a in answers] == [200, 200]
    assert client.post("/api/search", files=_upload(photo)).status_code == 200


def test_a_form_field_misspelt_or_sent_twice_is_refused(writable, small_catalog, rows):
    """A form field no route takes (the catalogue table's Portuguese names, ``nome``,
    ``preco``) was dropped unsaid: a product replaced so lost its name and price, answered
    200; a field sent twice was read as its last copy (two photos: the second searched)."""
    client, _ = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    added = client.post("/api/products", files=_upload(photo), headers=auth,
                        data={"product_id": "novo-1", "name": "Bolsa", "price": "99"})
    assert added.status_code == 201, added.text
    replaced = client.post("/api/products", files=_upload(photo), headers=auth,
                           data={"product_id": "novo-1", "nome": "Bolsa nova",
                                 "preco": "R$ 120,00"})
    assert replaced.status_code == 422, replaced.text
    assert "'nome'" in replaced.json()["detail"]
    stored = client.get("/api/products/novo-1").json()
    assert (stored["name"], stored["price"]) == ("Bolsa", 99.0)  # nothing lost
    twice = client.post("/api/products", files=_upload(photo), headers=auth,
                        data={"product_id": ["novo-2", "novo-3"]})
    assert twice.status_code == 422 and "'product_id'" in twice.json()["detail"]
    assert client.get("/api/products/novo-3").status_code == 404
    two_photos = client.post("/api/search", files=[
        ("image", ("a.jpg", photo, "image/jpeg")), ("image", ("b.jpg", b"junk", "image/jpeg"))])
    assert two_photos.status_code == 422 and "'image'" in two_photos.json()["detail"]
    k_in_form = client.post("/api/search", files=_upload(photo), data={"k": "1"})
    assert k_in_form.status_code == 422 and "?k=" in k_in_form.json()["detail"]
    fine = client.post("/api/search", params={"k": 1}, files=_upload(photo),
                       data={"category": rows[30]["category"]})
    assert fine.status_code == 200 and len(fine.json()["results"]) == 1


def test_a_json_body_in_utf_16_or_32_is_refused_as_not_utf_8(writable, rows):
    """json.loads reads UTF-16 and UTF-32 by their first bytes, so a PATCH in them was taken
    while one in Windows-1252 was refused: the README says a body not UTF-8 is a 422."""
    client, _ = writable
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    pid = rows[0]["product_id"]
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"):
        r = client.patch(f"/api/products/{pid}", headers=auth,
                         content='{"name": "Relógio"}'.encode(encoding))
        assert r.status_code == 422 and "UTF-8" in r.json()["detail"], (encoding, r.text)
    assert client.get(f"/api/products/{pid}").json()["name"] == rows[0]["name"]
    with_bom = client.patch(f"/api/products/{pid}", headers=auth,
                            content='{"name": "Relógio"}'.encode("utf-8-sig"))
    assert with_bom.status_code == 200 and with_bom.json()["name"] == "Relógio"


def test_a_store_without_a_write_mark_counts_again_after_the_servers_own_write(
        settings, small_store, embedder, tmp_path, monkeypatch):
    """A store that keeps no record of its writes (Milvus: ``write_mark`` None) keeps its
    counts for CATEGORIES_TTL_S, but not past this server's own write: the pages said a
    category still held the product just deleted (or none of the one just added)."""
    from vitrine.service import VitrineService
    from vitrine.store.embedded import EmbeddedStore

    monkeypatch.setattr(EmbeddedStore, "write_mark", lambda self: None)
    shutil.copytree(small_store, tmp_path / "store")
    service = VitrineService(settings, tmp_path / "store", embedder)
    try:
        before = service.categories()
        category = sorted(before)[0]
        gone = service.products(category=category, query=None, limit=1,
                                offset=0)[0][0].product_id
        service.delete_product(gone)
        assert service.categories() == {**before, category: before[category] - 1}
    finally:
        service.close()


def test_an_empty_category_in_the_address_is_no_filter(client):
    """`?category=` (the README's `GET /api/products?category=&q=`) filters nothing, as
    documented: not the store's ``category=""``, the products without a category."""
    listed = client.get("/api/products", params={"category": "", "limit": 200})
    assert listed.status_code == 200 and len(listed.json()["products"]) == 48
    first = listed.json()["products"][0]["product_id"]
    similar = client.get(f"/api/products/{first}/similar", params={"category": "", "k": 5})
    assert similar.status_code == 200 and len(similar.json()["results"]) == 5


def test_an_id_stored_in_a_mix_of_unicode_forms_answers_either_form(writable, small_catalog,
                                                                      rows):
    """An id stored part composed, part decomposed ("Café" typed, "São" from a Mac) answered
    404 to both whole forms, in the API and on its page. Where two stored ids are spelled
    so, neither is picked: a read is a 404 naming both, an upload a 422 (not a third)."""
    import dataclasses
    import unicodedata

    from vitrine.store import open_store
    from vitrine.store.base import Record

    client, store = writable
    auth = {"Authorization": f"Bearer {KEY}"}
    mixed = "Café S" + "a\u0303o"
    photo = _jpeg(small_catalog / rows[30]["image"], flip=True)
    added = client.post("/api/products", files=_upload(photo), headers=auth,
                        data={"product_id": mixed, "name": "Café"})
    assert added.status_code == 201 and added.json()["product_id"] == mixed
    composed, decomposed = (unicodedata.normalize(form, mixed) for form in ("NFC", "NFD"))
    for typed in (composed, decomposed):
        assert client.get(f"/api/products/{typed}").json()["product_id"] == mixed
        similar = client.get(f"/api/products/{typed}/similar", params={"k": 3})
        assert similar.status_code == 200 and similar.json()["product"]["product_id"] == mixed
        assert client.get(f"/products/{typed}").status_code == 200
    writer = open_store(store)  # (a second product, the first's id composed: a table's)
    writer.lock_for_writing()
    held = writer.get(mixed)
    writer.upsert([Record(dataclasses.replace(held.to_product(), product_id=composed),
                          held.content_sha256, held.phash, held.thumb, writer.vector(mixed))])
    writer.close()
    count = client.get("/healthz").json()["products"]
    assert client.get(f"/api/products/{composed}").json()["product_id"] == composed
    asked = client.get(f"/api/products/{decomposed}")
    assert asked.status_code == 404 and "2 stored ids differ from it only in how their " \
        "accents are encoded" in asked.json()["detail"]
    assert client.get(f"/products/{decomposed}").status_code == 404
    sent = client.post("/api/products", files=_upload(photo), headers=auth,
                       data={"product_id": decomposed, "name": "Café"})
    assert sent.status_code == 422 and "2 stored ids" in sent.json()["detail"]
    assert client.get("/healthz").json()["products"] == count
