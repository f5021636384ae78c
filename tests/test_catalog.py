"""Reading catalogue folders and CSVs."""

from __future__ import annotations

import pytest
from PIL import Image

from vitrine.catalog import parse_price, read_catalog, stratified_split
from vitrine.errors import CatalogError


def photo(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


def test_folder_without_csv(tmp_path):
    photo(tmp_path / "bolsas" / "a.JPG")
    photo(tmp_path / "bolsas" / "b.png")
    photo(tmp_path / "relogios" / "sub" / "c.webp")
    (tmp_path / "relogios" / "notes.txt").write_text("not a photo")
    photo(tmp_path / ".hidden" / "d.jpg")
    products = read_catalog(tmp_path)
    assert [p.product_id for p in products] == ["bolsas/a.JPG", "bolsas/b.png",
                                                "relogios/sub/c.webp"]
    assert [p.category for p in products] == ["bolsas", "bolsas", "relogios"]
    assert products[0].image == (tmp_path / "bolsas" / "a.JPG").resolve()


def test_csv_with_attributes_and_prices(tmp_path):
    photo(tmp_path / "x" / "1.jpg")
    photo(tmp_path / "x" / "2.jpg")
    photo(tmp_path / "y" / "unlisted.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image,category,name,price,description,colour\n"
        "p1,x/1.jpg,bolsa,Bolsa Azul,\"1.299,90\",Couro,azul\n"
        "p2,x/2.jpg,,Bolsa Preta,,,\n")
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert set(products) == {"p1", "p2", "y/unlisted.jpg"}
    assert products["p1"].price == 1299.90 and products["p1"].category == "bolsa"
    assert products["p1"].attributes == {"colour": "azul"}
    assert products["p2"].category == "x" and products["p2"].price is None
    assert products["y/unlisted.jpg"].category == "y"


@pytest.mark.parametrize("text, value", [("129.90", 129.9), ("129,90", 129.9),
                                         ("R$ 1.299,90", 1299.9), ("1,299.90", 1299.9),
                                         ("R$\u00a0129,90", 129.9), ("R$ 1.299", 1299.0),
                                         ("1.299.000", 1299000.0), ("1,299,000.5", 1299000.5),
                                         ("0.125", 0.125), ("US$ 5", 5.0), ("7", 7.0),
                                         ("", None), ("  ", None)])
def test_parse_price(text, value):
    assert parse_price(text) == value


@pytest.mark.parametrize("text", ["1e20", "12abc34", "-5", "1,2,3", "12.34.56",
                                  "R$", "1.2.3,4", "€ 5", "0.299.000"])
def test_parse_price_refuses_what_it_cannot_read(text):
    with pytest.raises(CatalogError, match="not a number"):
        parse_price(text)


def test_bad_inputs_are_clear(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(CatalogError, match="not a folder"):
        read_catalog(tmp_path / "f.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="no product photos"):
        read_catalog(empty)
    photo(tmp_path / "c" / "a" / "1.jpg")
    (tmp_path / "c" / "products.csv").write_text("image,price\na/1.jpg,abc\n")
    with pytest.raises(CatalogError, match="line 2"):
        read_catalog(tmp_path / "c")
    (tmp_path / "c" / "products.csv").write_text("image\n../../etc/passwd\n")
    with pytest.raises(CatalogError, match="outside"):
        read_catalog(tmp_path / "c")
    (tmp_path / "c" / "products.csv").write_text("product_id,image\n1,a/1.jpg\n1,a/1.jpg\n")
    with pytest.raises(CatalogError, match="twice"):
        read_catalog(tmp_path / "c")
    (tmp_path / "c" / "products.csv").write_text("image,name\na/1.jpg,Bolsa, azul\n")
    with pytest.raises(CatalogError, match="line 2: more fields than the header"):
        read_catalog(tmp_path / "c")


def test_stratified_split_is_seeded_and_per_category(tmp_path):
    for cat, n in (("a", 10), ("b", 5), ("c", 1)):
        for i in range(n):
            photo(tmp_path / cat / f"{i}.jpg")
    products = read_catalog(tmp_path)
    keep, held = stratified_split(products, 0.2, seed=3)
    assert len(keep) + len(held) == 16 and not {p.product_id for p in keep} & {
        p.product_id for p in held}
    assert sum(p.category == "a" for p in held) == 2
    assert sum(p.category == "b" for p in held) == 1
    assert all(p.category != "c" for p in held)  # a lone product stays indexed
    assert stratified_split(products, 0.2, seed=3)[1] == held
    assert stratified_split(products, 0.2, seed=4)[1] != held
