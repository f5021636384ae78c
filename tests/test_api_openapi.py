"""The REST API's OpenAPI document against what the API answers (found by fuzzing the running
server with schemathesis against /openapi.json, helper-343): every status, content type, header
and field a response can have is in the document, and every request the document allows is
one the API takes."""

from __future__ import annotations

import csv
import io
import shutil

import pytest
from fastapi.testclient import TestClient
from PIL import Image

KEY = "openapi-key"


@pytest.fixture(scope="module")
def api(settings, small_store, embedder, tmp_path_factory):
    from vitrine.api import create_app

    store = tmp_path_factory.mktemp("openapi") / "store"
    shutil.copytree(small_store, store)
    client = TestClient(create_app(settings.model_copy(update={"api_key": KEY}), store,
                                   embedder=embedder))
    return client, client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def pid(small_catalog) -> str:
    with open(small_catalog / "products.csv", newline="") as fh:
        return next(csv.DictReader(fh))["product_id"]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_a_photo_asked_for_in_several_ranges_is_a_documented_206(api, pid):
    client, spec = api
    parts = client.get(f"/images/{pid}", headers={"Range": "bytes=0-1,4-5"})
    assert parts.status_code == 206
    kind = parts.headers["content-type"].split(";")[0]
    assert kind == "multipart/byteranges"  # (Starlette's answer to several ranges)
    assert kind in spec["paths"]["/images/{product_id}"]["get"]["responses"]["206"]["content"]


def test_an_empty_edit_is_refused_and_the_schema_says_so(api, pid):
    client, spec = api
    refused = client.patch(f"/api/products/{pid}", json={},
                           headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 422
    assert spec["components"]["schemas"]["ProductEdit"]["minProperties"] == 1


def test_fields_always_sent_are_required(api):
    client, spec = api
    schemas = spec["components"]["schemas"]
    page = client.get("/api/products", params={"limit": 1}).json()
    found = client.post("/api/search", files={"image": ("p.png", _png(), "image/png")})
    assert found.status_code == 200
    for name, body in (("ProductPage", page), ("SearchOut", found.json())):
        assert set(body) == set(schemas[name]["required"]), name  # (next_cursor, the guess)
    timing = spec["paths"]["/api/search"]["post"]["responses"]["200"]["headers"]
    assert "server-timing" in found.headers and timing["Server-Timing"]["required"]


def test_the_photo_forms_are_closed(api):
    """A field the form does not take is a 422: the schema says no other field."""
    client, spec = api
    auth = {"Authorization": f"Bearer {KEY}"}
    for path, body, fields in (("/api/search", "Body_search", {"nome": "x"}),
                               ("/api/products", "Body_add_product",
                                {"product_id": "openapi-1", "nome": "x"})):
        refused = client.post(path, files={"image": ("p.png", _png(), "image/png")},
                              data=fields, headers=auth)
        assert refused.status_code == 422 and "nome" in refused.json()["detail"], path
        assert spec["components"]["schemas"][body]["additionalProperties"] is False, body
