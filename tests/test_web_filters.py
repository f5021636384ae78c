"""The web pages' price and attribute filter (search page and product page's similar list):
only matching products listed, the filter carried in every address the page writes, said
beside the results, and bad values said in one sentence with a 400 (never a 500)."""

from __future__ import annotations

import csv
import html
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient

PRICES = (19.9, 29.9, 49.9, 79.9, 129.9, None)
"""The prices the products of each category are given, in the small catalogue's order: one
of each category has none."""


def price_store(small_store: Path, dest: Path) -> dict[str, float | None]:
    """A copy of the small store at ``dest`` whose products are priced (:data:`PRICES`, one
    of each category without a price); product id → price."""
    from vitrine.store import open_store

    shutil.copytree(small_store, dest)
    store = open_store(dest)
    try:
        listed = store.list_products(limit=1000)
        seen: dict[str, int] = {}
        prices = {}
        for product in listed:
            i = seen[product.category] = seen.get(product.category, -1) + 1
            prices[product.product_id] = PRICES[i % len(PRICES)]
        store.update_metadata([p.to_product(price=prices[p.product_id]) for p in listed])
    finally:
        store.close()
    return prices


@pytest.fixture(scope="module")
def priced_store(small_store, tmp_path_factory) -> tuple[Path, dict[str, float | None]]:
    path = tmp_path_factory.mktemp("priced") / "store"
    return path, price_store(small_store, path)


@pytest.fixture(scope="module")
def priced(priced_store) -> dict[str, float | None]:
    return priced_store[1]


@pytest.fixture(scope="module")
def priced_path(priced_store) -> Path:
    return priced_store[0]


@pytest.fixture(scope="module")
def client(settings, priced_path, embedder) -> TestClient:
    from vitrine.api import create_app

    return TestClient(create_app(settings, priced_path, embedder=embedder))


@pytest.fixture(scope="module")
def rows(small_catalog) -> dict[str, dict]:
    with open(small_catalog / "products.csv", newline="") as fh:
        return {r["product_id"]: r for r in csv.DictReader(fh)}


def listed(page: str) -> list[str]:
    """The product ids of a page's result cards, in order."""
    return [urlsplit(html.unescape(href)).path.rsplit("/", 1)[1]
            for href in re.findall(r'class="card-link" href="([^"]+)"', page)]


def link_query(href: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(html.unescape(href)).query)


def mates(priced, rows, product_id: str) -> list[str]:
    category = rows[product_id]["category"]
    return [p for p in priced if rows[p]["category"] == category and p != product_id]


def test_the_similar_list_keeps_only_the_products_the_filter_keeps(client, priced, rows):
    """A price bound keeps the products priced within it, both bounds included, and leaves
    out a product without a price; an attribute keeps those holding it; the page says the
    filter beside the list."""
    first = next(iter(priced))  # (the first of its category: 19,90)
    others = mates(priced, rows, first)
    path = "/products/" + first
    everyone = listed(client.get(path).text)
    unpriced = [p for p in others if priced[p] is None]
    assert sorted(everyone) == sorted(others) and len(unpriced) == 1

    cheap = client.get(path, params={"max_price": "49.9"})
    assert cheap.status_code == 200
    kept = listed(cheap.text)
    assert sorted(kept) == sorted(p for p in others if priced[p] is not None
                                  and priced[p] <= 49.9)
    assert len(kept) == 2  # 29,90 and 49,90 (the bound itself kept)
    assert "Filtro: <bdi>preço até R$\u00a049,90</bdi>" in cheap.text
    assert 'id="max-price" name="max_price" type="text"' in cheap.text
    assert 'value="49.9"' in cheap.text
    # any bound leaves out the product without a price
    bounded = listed(client.get(path, params={"min_price": "0"}).text)
    assert unpriced[0] not in bounded and len(bounded) == len(others) - 1
    between = listed(client.get(path, params={"min_price": "30", "max_price": "100"}).text)
    assert sorted(between) == sorted(p for p in others if priced[p] is not None
                                     and 30 <= priced[p] <= 100)

    # an attribute, chosen from its list of the store's values
    colour = rows[others[0]]["colour"]
    coloured = client.get(path, params={"attr": f"colour={colour}", "same": 0}).text
    found = listed(coloured)
    assert found and all(rows[p]["colour"] == colour for p in found)
    assert f'<option value="colour={colour}" selected>{colour}</option>' in coloured
    assert f"Filtro: <bdi>colour: {colour}</bdi>" in coloured
    both = client.get(path, params={"attr": f"colour={colour}", "same": 0,
                                    "max_price": "60"}).text
    assert listed(both) and all(rows[p]["colour"] == colour and priced[p] is not None
                                and priced[p] <= 60 for p in listed(both))
    # the list of every key of few values is offered, each with the store's values
    assert re.search(r'<label for="attr-\d">Colour</label>', coloured)
    assert re.search(r'<label for="attr-\d">Article type</label>', coloured)
    assert '<option value="gender=Women">Women</option>' in coloured


def test_an_empty_filtered_list_says_the_filter_is_why(client, priced, rows):
    first = next(iter(priced))
    page = client.get("/products/" + first, params={"min_price": "1000"})
    assert page.status_code == 200 and listed(page.text) == []
    assert "Nenhum produto parecido atende a este filtro" in page.text
    assert "Nenhum produto similar encontrado." not in page.text
    english = client.get("/products/" + first, params={"min_price": "1000", "lang": "en"})
    assert "No similar product matches this filter" in english.text
    assert "Filter: <bdi>priced from R$1,000.00</bdi>" in english.text


def test_the_filter_is_kept_in_every_address_the_page_writes(client, priced, rows):
    """The similar products opened, the other scope, the other language and the form sent
    again keep the filter; "Limpar filtros" drops it alone."""
    first = next(iter(priced))
    path = "/products/" + first
    asked = {"max_price": "80", "attr": "gender=Men", "same": "0"}
    page = client.get(path, params=asked).text
    cards = re.findall(r'class="card-link" href="([^"]+)"', page)
    assert cards and all(link_query(c)["max_price"] == ["80"]
                         and link_query(c)["attr"] == ["gender=Men"] for c in cards)
    scope = re.findall(r'<a href="([^"#]+)#similar-title"', page)
    assert len(scope) == 2 and all(link_query(s)["max_price"] == ["80"] for s in scope)
    switch = re.search(r'class="lang-switch" href="([^"]+)"', page).group(1)
    english = client.get(html.unescape(switch)).text
    assert listed(english) == listed(page) and "Filter: <bdi>priced up to R$80.00" in english
    # the form, sent as a browser sends it (its fields' values, the lists' chosen options)
    form = page.split('<form class="similar-filters"', 1)[1].split("</form>", 1)[0]
    fields = re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)
    fields += re.findall(r'name="(\w+_price)" type="text"[^>]*value="([^"]*)"', form)
    fields += [("attr", html.unescape(v)) for v in
               re.findall(r'<option value="([^"]*)" selected>', form)]
    fields += [("attr", "") for _ in range(form.count('name="attr"') - len(
        re.findall(r'<option value="[^"]*" selected>', form)))]  # (lists left at "any")
    action = re.search(r'action="([^"]+)"', form).group(1)
    assert urlsplit(action).path == path and action.endswith("#similar-title")
    again = client.get(path + "?" + urlencode(fields)).text
    assert listed(again) == listed(page) and ("same", "0") in fields
    # the filter cleared, the scope kept
    clear = re.search(r'<a class="clear-filters" href="([^"]+)"', page).group(1)
    assert link_query(clear) == {"same": ["0"]}
    assert len(listed(client.get(html.unescape(clear)).text)) == 10


@pytest.mark.parametrize(("params", "sentence", "invalid"), [
    ({"min_price": "abc"}, "O preço mínimo “abc” não é um número: escreva só o número, como "
                           "49,90.", ["min-price"]),
    ({"max_price": "nan"}, "O preço máximo “nan” não é um número", ["max-price"]),
    ({"max_price": "1e999"}, "O preço máximo “1e999” não é um número", ["max-price"]),
    ({"max_price": "1e300"}, "O preço máximo “1e300” não é um preço: escreva um valor de 0 a "
                             "R$\u00a01.000.000.000.000,00.", ["max-price"]),  # (was a 500)
    ({"min_price": "-5"}, "O preço mínimo “-5” não é um preço", ["min-price"]),
    ({"min_price": "80", "max_price": "20"}, "O preço mínimo (R$\u00a080,00) é maior que o "
                                             "máximo (R$\u00a020,00)",
     ["min-price", "max-price"]),
    # (each attribute the fields hold marked: the colour list's and the 20 others in text
    # fields of their own, none dropped; the one not KEY=VALUE in its text field)
    ({"attr": [f"colour=c{i}" for i in range(21)]}, "Filtros de características demais "
                                                    "(21): no máximo 20 por busca.",
     ["attr-2", *[f"attr-typed-{i}" for i in range(1, 21)]]),
    ({"attr": "colour"}, "O filtro de característica “colour” não está escrito como "
                         "chave=valor.", ["attr-typed-1"]),
    ({"attr": "=Red"}, "O filtro de característica “=Red” não está", ["attr-typed-1"]),
])
def test_a_bad_filter_is_said_on_the_page_with_a_400(client, priced, params, sentence,
                                                      invalid):
    first = next(iter(priced))
    page = client.get("/products/" + first, params=params)
    assert page.status_code == 400, page.text[-500:]
    text = page.text
    assert sentence in text and text.count('role="alert"') == 1
    assert listed(text) == []
    assert re.search(r"<h1>[^<]+</h1>", text)  # the product is still shown
    marked = re.findall(r'id="([\w-]+)"[^>]*aria-invalid="true" '
                        r'aria-describedby="filter-error"', text)
    assert marked == invalid
    search = client.get("/search", params=params)
    assert search.status_code == 400 and sentence in search.text
    assert search.text.count('role="alert"') == 1


def test_a_bad_filter_is_said_in_english_and_a_price_in_reais_is_read(client, priced):
    first = next(iter(priced))
    page = client.get("/products/" + first, params={"min_price": "x1", "lang": "en"})
    assert page.status_code == 400
    assert "The minimum price “x1” is not a number: write the number alone" in page.text
    # a price written as a shopper writes it in reais: read, shown as the field writes it
    read = client.get("/products/" + first, params={"max_price": "R$ 49,90"})
    assert read.status_code == 200 and 'value="49.9"' in read.text
    assert len(listed(read.text)) == 2


def test_a_price_with_thousands_is_read_as_a_shopper_writes_it(client, priced):
    """"1.299" in a price field is R$ 1.299 (a dot before three digits groups thousands, as
    the catalogue table's prices are read), not R$ 1,30, which kept none of the products;
    a bound the page writes back has at most two decimals (three would read as thousands)."""
    first = next(iter(priced))
    page = client.get("/products/" + first, params={"max_price": "1.299"})
    assert page.status_code == 200 and 'value="1299"' in page.text
    assert "até R$\u00a01.299,00" in page.text
    every_priced = client.get("/products/" + first, params={"min_price": "0"})
    assert listed(page.text) == listed(every_priced.text) != []
    sub_cent = client.get("/products/" + first, params={"max_price": "49.9061"})
    assert 'value="49.91"' in sub_cent.text
    again = client.get("/products/" + first, params={"max_price": "49.91"})
    assert listed(again.text) == listed(sub_cent.text)


def test_the_api_reads_a_bound_as_a_program_writes_it_the_pages_as_a_shopper_does(
        client, priced, rows):
    """The same address, two readers: the API's `min_price=1.299` is a program's number
    (JSON's, Python's str(1.299): under R$ 2), which every priced product passes, and
    `max_price=49.906` is under R$ 50; the pages read a bound as a shopper types it in reais
    (a dot before three digits groups thousands: R$ 1.299, which none of them reaches).
    "49,90" is a shopper's R$ 49,90 on the pages and a 422 in the API, which takes no
    comma."""
    every_priced = [p for p, price in priced.items() if price is not None]
    api = client.get("/api/products", params={"min_price": "1.299", "limit": 200}).json()
    assert [p["product_id"] for p in api["products"]] == every_priced
    api = client.get("/api/products", params={"max_price": "49.906", "limit": 200}).json()
    assert [p["product_id"] for p in api["products"]] == _priced_under(priced, rows, 49.9)
    first = next(iter(priced))
    similar = client.get(f"/api/products/{first}/similar", params={"k": 100,
                                                                    "min_price": "1.299"})
    assert len(similar.json()["results"]) == len(every_priced) - (priced[first] is not None)
    page = client.get("/", params={"min_price": "1.299"}).text
    assert "preço a partir de R$\u00a01.299,00" in page and listed(page) == []
    page = client.get("/", params={"max_price": "49,90"}).text
    assert "preço até R$\u00a049,90" in page
    assert listed(page) == _priced_under(priced, rows, 49.9)[:len(listed(page))] != []
    comma = client.get("/api/products", params={"max_price": "49,90"})
    assert comma.status_code == 422 and comma.json()["detail"] == (
        "Invalid query parameter: max_price must be a number, not '49,90'.")
    described = client.get("/openapi.json").json()["paths"]["/api/products"]["get"]
    assert all("no thousands separator" in p["description"]
               for p in described["parameters"] if p["name"] in ("min_price", "max_price"))


@pytest.mark.parametrize("typed", ["49.906", "1.299", "R$ 1.299,90", "49,90", "49.9061",
                                   "1234.5678", "0,004", "1e3", "999999999999.994"])
def test_a_bound_the_pages_write_is_read_alike_by_the_pages_and_the_api(typed):
    """The bound a page writes back (its field, every link it makes) has at most two
    decimals after a dot and no thousands: the pages read it again as the bound they
    applied, to the cent, and the API as the same number (a kept link is never read as
    thousands, nor a bound in thousands as reais by the API)."""
    from vitrine.store.filters import parse_filter
    from vitrine.web.filters_form import read_filter

    applied = read_filter({"max_price": typed}, "pt")
    written = applied.max_price
    assert applied.where is not None and re.fullmatch(r"\d+(\.\d{1,2})?", written), written
    again = read_filter({"max_price": written}, "pt")
    assert again.max_price == written
    assert again.where.max_price == parse_filter(None, written).max_price == round(
        applied.where.max_price, 2)


def test_a_photo_search_keeps_only_what_the_filter_keeps(client, priced, rows, small_catalog):
    photo = (small_catalog / rows[next(iter(priced))]["image"]).read_bytes()
    files = {"image": ("q.jpg", photo, "image/jpeg")}
    plain = client.post("/search", files=files)
    assert len(listed(plain.text)) == 10
    assert any(priced[p] is None or priced[p] > 50 for p in listed(plain.text))
    for fragment in (0, 1):
        found = client.post("/search", params={"fragment": fragment} if fragment else {},
                            data={"max_price": "50", "min_price": "", "attr": ["", "gender=Men"]},
                            files=files)
        assert found.status_code == 200
        ids = listed(found.text)
        assert ids and all(priced[p] is not None and priced[p] <= 50
                           and rows[p]["gender"] == "Men" for p in ids)
        assert "Filtro: <bdi>preço até R$\u00a050,00 · gender: Men</bdi>" in found.text
        # a result opened keeps the filter on its own similar list
        card = re.search(r'class="card-link" href="([^"]+)"', found.text).group(1)
        assert link_query(card) == {"max_price": ["50"], "attr": ["gender=Men"]}
    # the page without JavaScript: the form shown again with the filter, the toggle keeping it
    page = client.post("/search", data={"max_price": "50", "attr": "gender=Men"},
                       files=files).text
    assert 'id="max-price" name="max_price" type="text" inputmode="decimal" ' \
           'value="50"' in page
    assert '<option value="gender=Men" selected>Men</option>' in page
    switch = re.search(r'class="lang-switch" href="([^"]+)"', page).group(1)
    assert link_query(switch) == {"max_price": ["50"], "attr": ["gender=Men"],
                                  "lang": ["en"]}
    # none left: the filter is why
    none = client.post("/search", data={"min_price": "5000"}, files=files).text
    assert listed(none) == [] and "Nenhum produto parecido atende a este filtro" in none
    # a bad value: said before the photo is read, as the filter's fault (not the photo's)
    bad = client.post("/search", params={"fragment": 1},
                      data={"min_price": "60", "max_price": "10"}, files=files)
    assert bad.status_code == 400 and 'id="filter-error" role="alert"' in bad.text
    assert "é maior que o máximo" in bad.text and "photo-error" not in bad.text
    # the search form opened with a filter in its address shows it, and sends it along
    opened = client.get("/search", params={"max_price": "50"}).text
    assert 'action="/search?max_price=50"' in opened and 'value="50"' in opened


def test_the_attribute_lists_offer_few_valued_keys_and_keep_any_choice():
    """Keys of the most products first, at most ATTRIBUTE_KEYS_MAX; a key every product holds
    with one value is no list; a chosen value the store lacks stays chosen; a chosen
    attribute of a key not listed is carried as it is."""
    from vitrine.web.filters_form import ATTRIBUTE_KEYS_MAX, attribute_fields, read_filter

    values = {"colour": {"Red": 3, "blue": 2, "Azul": 1}, "gender": {"Men": 6},
              "size": {"M": 1}, **{f"k{i}": {"a": 1, "b": 1} for i in range(10)}}
    chosen = read_filter({"attr": ["colour=Green", "k9=a", "colour=Red", "sku=1"]}, "pt")
    fields, rest = attribute_fields(values, 6, chosen)
    assert [f.key for f in fields][:2] == ["colour", "k0"] and "gender" not in [
        f.key for f in fields] and len(fields) == ATTRIBUTE_KEYS_MAX
    assert fields[0].values == ["Green", "Azul", "blue", "Red"]
    assert fields[0].chosen == "Green" and fields[1].chosen is None
    assert rest == ["k9=a", "colour=Red", "sku=1"]
    # a key held by some products only, with one value, is a list (it narrows)
    fields, _ = attribute_fields({"size": {"M": 1}}, 6, chosen)
    assert [f.key for f in fields] == ["size"]


def test_the_stores_count_attribute_values_alike(tmp_path, priced_path, rows):
    """Both stores count each key's values, text alone, leaving out a key of more values than
    asked for."""
    from test_store import MANIFEST, record, unit

    from vitrine.store import open_store

    store = open_store(priced_path)
    try:
        counted = store.attribute_values(50)
    finally:
        store.close()
    assert counted["colour"] == {c: sum(r["colour"] == c for r in rows.values())
                                 for c in sorted({r["colour"] for r in rows.values()})}
    assert set(counted) == {"colour", "gender", "article_type"}
    made = [record("a", unit(1, 0), attributes={"cor": "azul", "sku": "1"}),
            record("b", unit(0, 1), attributes={"cor": "azul", "sku": "2"}),
            record("c", unit(1, 1), attributes={"cor": "verde", "sku": "3"}),
            record("d", unit(1, 2))]
    stores = [open_store(tmp_path / "e", create=True)]
    try:
        import milvus_lite  # noqa: F401
        stores.append(open_store(f"milvus-lite://{tmp_path}/m.db", create=True))
    except ImportError:
        from conftest import IN_CI
        if IN_CI:
            raise
    for store in stores:
        try:
            store.set_manifest(MANIFEST)
            store.upsert(made)
            assert store.attribute_values(2) == {"cor": {"azul": 2, "verde": 1}}
            assert store.attribute_values(3) == {"cor": {"azul": 2, "verde": 1},
                                                 "sku": {"1": 1, "2": 1, "3": 1}}
        finally:
            store.close()


def test_the_attribute_lists_are_counted_once_a_while(settings, priced_path, embedder,
                                                      monkeypatch):
    """Counting the attribute values reads every product (under the embedded store's lock,
    which searches wait for): the pages keep one count until the store is written, and
    count again at most every ATTRIBUTES_TTL_S however often it is."""
    from vitrine import service_categories
    from vitrine.service import VitrineService

    service = VitrineService(settings, priced_path, embedder)
    try:
        counted = []
        real = type(service.store).attribute_values
        monkeypatch.setattr(type(service.store), "attribute_values",
                            lambda self, most: counted.append(most) or real(self, most))
        now = [1000.0]
        monkeypatch.setattr(service_categories.time, "monotonic", lambda: now[0])
        ttl = service_categories.ATTRIBUTES_TTL_S
        first = service.attribute_values(50)
        assert service.attribute_values(50) is first and counted == [50]
        mark = service.store.write_mark()
        monkeypatch.setattr(type(service.store), "write_mark", lambda self: (mark, "written"))
        now[0] += ttl / 2  # (written, but counted less than ATTRIBUTES_TTL_S ago: kept)
        assert service.attribute_values(50) is first and counted == [50]
        now[0] += ttl  # (written since the count, which is older than ATTRIBUTES_TTL_S)
        second = service.attribute_values(50)
        assert second == first and counted == [50, 50]
        now[0] += 10 * ttl  # (no write since: the same count, however old)
        assert service.attribute_values(50) is second and counted == [50, 50]
    finally:
        service.close()


# ---- the catalogue listing: page `/` and GET /api/products ---------------------------------

def _priced_under(priced, rows, most: float, category: str | None = None) -> list[str]:
    """The products priced at most ``most`` (of ``category``), in the catalogue's order."""
    return [p for p, price in priced.items() if price is not None and price <= most
            and (category is None or rows[p]["category"] == category)]


def test_the_api_lists_the_products_of_a_price_and_attribute(client, priced, rows):
    """GET /api/products takes similar's filter: only its products, in the listing's order,
    page by page by offset and by cursor (each once), with the category and name search."""
    want = _priced_under(priced, rows, 79.9)
    assert len(want) == 32  # (four of six a category: 19,90 to 79,90)
    got = client.get("/api/products", params={"max_price": "79.9", "limit": 200}).json()
    assert [p["product_id"] for p in got["products"]] == want and not got["has_more"]
    by_offset = [p["product_id"] for offset in range(0, 40, 10) for p in client.get(
        "/api/products", params={"max_price": "79.9", "limit": 10, "offset": offset}
    ).json()["products"]]
    assert by_offset == want
    walked, cursor = [], None
    while True:
        page = client.get("/api/products", params={"max_price": "79.9", "limit": 10,
                                                   "cursor": cursor}).json()
        walked += [p["product_id"] for p in page["products"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert walked == want
    between = client.get("/api/products", params={"min_price": "29.9", "max_price": "49.9",
                                                  "category": "relogio_feminino"}).json()
    assert [p["product_id"] for p in between["products"]] == [
        p for p in want if rows[p]["category"] == "relogio_feminino"
        and priced[p] >= 29.9 and priced[p] <= 49.9]
    assert len(between["products"]) == 2
    colour = rows[want[0]]["colour"]
    coloured = client.get("/api/products", params={"attr": [f"colour={colour}", "gender=Men"],
                                                   "min_price": "0", "limit": 200}).json()
    assert [p["product_id"] for p in coloured["products"]] == [
        p for p in priced if priced[p] is not None and rows[p]["colour"] == colour
        and rows[p]["gender"] == "Men"]
    assert client.get("/api/products", params={"min_price": "1000"}).json()["products"] == []


@pytest.mark.parametrize("params", [{"min_price": "abc"}, {"max_price": "nan"},
                                    {"min_price": "80", "max_price": "20"},
                                    {"attr": "colour"}, {"attr": "=Red"},
                                    {"attr": [f"colour=c{i}" for i in range(21)]}])
def test_the_api_refuses_a_bad_listing_filter_with_a_422(client, params):
    r = client.get("/api/products", params=params)
    assert r.status_code == 422
    assert r.json()["detail"].startswith("Invalid query parameter: ")


def test_the_catalogue_page_lists_pages_of_the_filter_and_counts_them(client, priced, rows):
    """`/?max_price=79.9`: its 32 products over two pages of 24, counted, the next and
    previous links, the form and the language toggle keeping the filter; the note says it,
    its clear link keeping the category and name search."""
    want = _priced_under(priced, rows, 79.9)
    first = client.get("/", params={"max_price": "79.9"})
    assert first.status_code == 200
    assert listed(first.text) == want[:24] and "32 produtos" in first.text
    assert "Página 1 de 2" in first.text
    assert "Filtro: <bdi>preço até R$\u00a079,90</bdi>" in first.text
    assert 'id="max-price" name="max_price" type="text"' in first.text
    nxt = re.search(r'rel="next" href="([^"]+)"', first.text).group(1)
    assert link_query(nxt) == {"max_price": ["79.9"], "page": ["2"]}
    second = client.get(html.unescape(nxt))
    assert listed(second.text) == want[24:] and "Página 2 de 2" in second.text
    prev = re.search(r'rel="prev" href="([^"]+)"', second.text).group(1)
    assert link_query(prev) == {"max_price": ["79.9"], "page": ["1"]}
    switch = re.search(r'class="lang-switch" href="([^"]+)"', second.text).group(1)
    english = client.get(html.unescape(switch)).text
    assert listed(english) == want[24:] and "32 products" in english
    # within a category, with the name search, and an attribute chosen from its list
    category = rows[want[0]]["category"]
    mine = client.get("/", params={"category": category, "max_price": "79.9"}).text
    assert listed(mine) == _priced_under(priced, rows, 79.9, category)
    assert "4 produtos" in mine
    clear = re.search(r'<a class="clear-filters" href="([^"]+)"', mine).group(1)
    assert link_query(clear) == {"category": [category]}
    word = rows[want[0]]["name"].split()[0]
    named = client.get("/", params={"q": word, "max_price": "79.9"}).text
    assert listed(named) == [p for p in want if word.lower() in rows[p]["name"].lower()]
    assert link_query(re.search(r'<a class="clear-filters" href="([^"]+)"', named)
                      .group(1)) == {"q": [word]}
    colour = rows[want[0]]["colour"]
    coloured = client.get("/", params={"attr": f"colour={colour}"}).text
    assert listed(coloured) == [p for p in priced if rows[p]["colour"] == colour]
    assert f'<option value="colour={colour}" selected>{colour}</option>' in coloured
    assert f"{len(listed(coloured))} produto" in coloured


def test_the_catalogue_page_says_an_empty_or_bad_filter(client):
    none = client.get("/", params={"min_price": "1000"})
    assert none.status_code == 200 and listed(none.text) == []
    assert "Nenhum produto atende a este filtro" in none.text and "0 produtos" in none.text
    bad = client.get("/", params={"min_price": "80", "max_price": "20", "page": "2"})
    assert bad.status_code == 400 and listed(bad.text) == []
    assert "O preço mínimo (R$\u00a080,00) é maior que o máximo (R$\u00a020,00)" in bad.text
    assert bad.text.count('role="alert"') == 1 and "Nenhum produto" not in bad.text
    assert 'id="min-price" name="min_price" type="text" inputmode="decimal" ' \
           'value="80" data-filter aria-invalid="true"' in bad.text


def test_the_way_back_from_a_product_keeps_the_catalogue_pages_filter(client, priced, rows):
    """A product opened from page 2 of `/?max_price=79.9` led back to page 2 of the whole
    catalogue (other products, no filter; hunt385): the way back keeps the filter, also
    through the product page's own links (``back``); a bad filter is not kept (no way back
    to a 400)."""
    want = _priced_under(priced, rows, 79.9)
    colour = rows[want[0]]["colour"]
    came = f"http://testserver/?page=2&max_price=79.9&attr=colour%3D{colour}"
    page = client.get(f"/products/{want[0]}", headers={"Referer": came}).text
    back = re.search(r'<p class="breadcrumb"><a href="([^"]+)"', page).group(1)
    keep = {"page": ["2"], "max_price": ["79.9"], "attr": [f"colour={colour}"]}
    assert urlsplit(html.unescape(back)).path == "/" and link_query(back) == keep
    card = re.search(r'class="card-link" href="([^"]+)"', page).group(1)
    again = client.get(html.unescape(card)).text  # (its Referer would be the product page)
    back = re.search(r'<p class="breadcrumb"><a href="([^"]+)"', again).group(1)
    assert link_query(back) == keep
    assert listed(client.get(html.unescape(back)).text) == [
        p for p in want if rows[p]["colour"] == colour][24:]
    english = client.get(f"/products/{want[0]}", params={"lang": "en"},
                         headers={"Referer": came}).text
    back = re.search(r'<p class="breadcrumb"><a href="([^"]+)"', english).group(1)
    assert link_query(back) == {**keep, "lang": ["en"]}
    bad = client.get(f"/products/{want[0]}",
                     headers={"Referer": "http://testserver/?page=2&min_price=abc"}).text
    back = re.search(r'<p class="breadcrumb"><a href="([^"]+)"', bad).group(1)
    assert link_query(back) == {"page": ["2"]}


def _marked(text: str) -> list[str]:
    return re.findall(r'id="([\w-]+)"[^>]*aria-invalid="true" aria-describedby="filter-error"',
                      text)


def test_a_refused_attribute_keeps_its_value_in_a_marked_text_field(client, priced):
    """An attribute filter not written KEY=VALUE (from the address: no list writes one) is
    shown in a text field of its own holding it as typed, marked invalid, on the product,
    catalogue and search pages, in either language; sent again mended, it filters (not
    carried as a hidden field the shopper could neither see nor mend). The search page's
    results block names the field for the page's script to mark."""
    first = next(iter(priced))
    for path in (f"/products/{first}", "/", "/search"):
        page = client.get(path, params={"attr": "colour", "min_price": "10"})
        assert page.status_code == 400, path
        assert _marked(page.text) == ["attr-typed-1"], path
        assert re.search(r'<label for="attr-typed-1">Característica \(chave=valor\)</label>\s*'
                         r'<input id="attr-typed-1" name="attr" type="text" value="colour" '
                         r'data-filter aria-invalid="true"', page.text), path
        assert 'type="hidden" name="attr"' not in page.text, path
        assert 'value="10"' in page.text  # (the price, well written, kept too)
    english = client.get("/", params={"attr": "=Red", "lang": "en"}).text
    assert '<label for="attr-typed-1">Attribute (key=value)</label>' in english
    assert 'value="=Red"' in english and _marked(english) == ["attr-typed-1"]
    # a well-written attribute no list shows stays hidden, unmarked, while nothing is refused
    fine = client.get("/", params={"attr": "gtin=123"}).text
    assert 'type="hidden" name="attr" value="gtin=123"' in fine and _marked(fine) == []
    # beside well-written ones (a list's, one no list shows), only the refused one is marked
    mixed = client.get("/", params={"attr": ["gtin=1", "colour=nada", "colour"]})
    assert mixed.status_code == 400 and _marked(mixed.text) == ["attr-typed-2"]
    assert 'id="attr-typed-1" name="attr" type="text" value="gtin=1" data-filter>' \
        in mixed.text
    block = client.post("/search", params={"fragment": 1},
                        data={"attr": ["colour"]},
                        files={"image": ("x.jpg", b"not read", "image/jpeg")})
    assert block.status_code == 400
    assert 'class="message error filter-error" id="filter-error" role="alert" ' \
           'data-fields="" data-values=\'["colour"]\'' in block.text


def test_the_api_counts_the_whole_listing_when_asked(client, priced, rows):
    """``total=1``: how many products the listing holds on every page, with its category,
    price and attribute filter, the same on each page (by offset or cursor); null when not
    asked, and for a name search (not counted)."""
    unasked = client.get("/api/products", params={"limit": 5}).json()
    assert "total" in unasked and unasked["total"] is None
    every = client.get("/api/products", params={"limit": 5, "total": 1}).json()
    assert every["total"] == len(priced) == 48  # (the small store: 8 categories of 6)
    want = _priced_under(priced, rows, 79.9)
    pages, cursor = [], None
    while True:
        page = client.get("/api/products", params={"max_price": "79.9", "limit": 10,
                                                   "cursor": cursor, "total": "true"}).json()
        pages.append(page["total"])
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert pages == [len(want)] * 4 == [32] * 4
    later = client.get("/api/products", params={"max_price": "79.9", "offset": 30,
                                                "total": 1}).json()
    assert later["total"] == 32 and len(later["products"]) == 2
    category = rows[want[0]]["category"]
    for asked in (category, category.replace("_", " ").upper()):  # (as listed: helper-220)
        mine = client.get("/api/products", params={"category": asked, "total": 1}).json()
        assert mine["total"] == len(mine["products"]) == 6
        cheap = client.get("/api/products", params={"category": asked, "max_price": "79.9",
                                                    "total": 1}).json()
        assert cheap["total"] == len(_priced_under(priced, rows, 79.9, category)) == 4
    colour = rows[want[0]]["colour"]
    coloured = client.get("/api/products", params={"attr": f"colour={colour}", "limit": 1,
                                                   "total": 1}).json()
    assert coloured["total"] == sum(rows[p]["colour"] == colour for p in priced)
    for params in ({"min_price": "1000"}, {"category": "nenhuma"}):
        assert client.get("/api/products", params={**params, "total": 1}).json()["total"] == 0
    named = client.get("/api/products", params={"q": rows[want[0]]["name"].split()[0],
                                                "total": 1}).json()
    assert named["products"] and named["total"] is None


def _field_values(text: str) -> list[str]:
    """The attribute values a page's filter fields hold: each list's chosen option, each
    text field's and hidden field's value."""
    chosen = re.findall(r'<option value="([^"]+)" selected>', text)
    held = re.findall(r'<input (?:id="[\w-]+" name="attr" type="text"|type="hidden" '
                      r'name="attr") value="([^"]*)"', text)
    return [html.unescape(v) for v in chosen + held]


def test_attributes_refused_as_too_many_are_all_kept_in_the_fields(client, priced):
    """25 attribute filters (at most 20): the page shows every one, each marked, to choose
    which to drop (only the first 20 were shown: sent again, the form searched with 20 and
    said nothing of the 5 left out, hunt395); a bad price beside 21 attributes keeps all 21
    too (mended, the form is refused for too many, not cut to 20). Past ATTRS_SHOWN_MAX
    values the sentence says how many more were sent and are left out."""
    first = next(iter(priced))
    sent = [f"colour=c{i}" for i in range(25)]
    for path in (f"/products/{first}", "/", "/search"):
        page = client.get(path, params={"attr": sent})
        assert page.status_code == 400, path
        assert "Filtros de características demais (25)" in page.text, path
        assert sorted(_field_values(page.text)) == sorted(sent), path
        assert len(_marked(page.text)) == 25, path
    priced_wrong = client.get("/", params={"attr": sent[:21], "max_price": "abc"}).text
    assert "O preço máximo “abc”" in priced_wrong
    assert sorted(_field_values(priced_wrong)) == sorted(sent[:21])
    assert _marked(priced_wrong) == ["max-price"]
    # (repeats are one filter: shown once)
    many = client.get("/", params={"attr": [f"k=v{i}" for i in range(130)] + ["k=v0"],
                                   "lang": "en"})
    assert many.status_code == 400
    assert "Too many attribute filters (130): at most 20 a search. 30 more sent do not fit " \
           "the fields and are left out." in html.unescape(many.text)
    assert _field_values(many.text) == [f"k=v{i}" for i in range(100)]


def test_the_results_block_names_the_refused_values_for_the_script(client, priced):
    """The search page's script marks its own fields (they are not sent back): the results
    block names the attribute values refused (JSON), not the ids the server would number
    the fields with, which named another field once the shopper emptied one (hunt395); a
    value with quotes and markup survives the attribute."""
    import json

    def block(attrs, **form):
        sent = client.post("/search", params={"fragment": 1}, data={"attr": attrs, **form},
                           files={"image": ("x.jpg", b"not read", "image/jpeg")})
        assert sent.status_code == 400
        note = re.search(r'id="filter-error" role="alert" data-fields="([^"]*)" '
                         r"data-values='([^']*)'", sent.text)
        return note.group(1), json.loads(html.unescape(note.group(2)))

    odd = "it's \"<b>\" & co"
    assert block(["gtin=1", "first", odd]) == ("", ["first", odd])
    everyone = [f"colour=c{i}" for i in range(21)]
    assert block(everyone) == ("", everyone)
    assert block(["colour=c1"], min_price="abc") == ("min-price", [])
