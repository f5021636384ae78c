"""Reading catalogue folders and CSVs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from PIL import Image

from vitrine.catalog import (
    Product,
    parse_price,
    read_catalog,
    recategorised,
    recategorised_note,
    stratified_split,
)
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
    assert not any(p.unlisted for p in products)  # no table: nothing to be unlisted from
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
    assert products["y/unlisted.jpg"].unlisted and not products["p1"].unlisted


def test_a_table_category_other_than_the_folder_is_named(tmp_path):
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        photo(tmp_path / "tenis" / name)
    photo(tmp_path / "solta.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image,category\n"
        "p1,tenis/1.jpg,botas\n"     # the table overrides the folder: reported
        "p2,tenis/2.jpg,tenis\n"     # the same as the folder
        "p3,tenis/3.jpg,\n"          # no table category: the folder's
        "p4,solta.jpg,botas\n")      # no folder to disagree with
    products = read_catalog(tmp_path)
    assert [p.category for p in products] == ["botas", "tenis", "tenis", "botas"]
    assert recategorised(products) == [{"product_id": "p1", "category": "botas",
                                        "folder": "tenis"}]
    note = recategorised_note(recategorised(products))
    assert note.startswith("1 product(s) take their category from the product table")
    assert "p1 ('botas', folder 'tenis')" in note
    many = [{"product_id": f"p{i}", "category": "a", "folder": "b"} for i in range(5)]
    assert recategorised_note(many).endswith("p2 ('a', folder 'b') and 2 more.")
    assert recategorised_note([]) == ""


@pytest.mark.parametrize("text, value", [("129.90", 129.9), ("129,90", 129.9),
                                         ("R$ 1.299,90", 1299.9), ("1,299.90", 1299.9),
                                         ("R$\u00a0129,90", 129.9), ("R$ 1.299", 1299.0),
                                         ("1.299.000", 1299000.0), ("1,299,000.5", 1299000.5),
                                         ("0.125", 0.125), ("brl 5", 5.0), ("7", 7.0),
                                         ("", None), ("  ", None), ("Sob consulta", None),
                                         ("-", None)])
def test_parse_price(text, value):
    """Also what the API reads: a price the table may give, a form may give."""
    assert parse_price(text) == value


@pytest.mark.parametrize("text", ["1e20", "12abc34", "-5", "1,2,3", "12.34.56",
                                  "R$", "1.2.3,4", "0.299.000", "Grátis", "por 5",
                                  "5 R$", "5 reais",
                                  "1.299.5", "1,299,5"])
def test_parse_price_refuses_what_it_cannot_read(text):
    with pytest.raises(CatalogError, match="not a number"):
        parse_price(text)


@pytest.mark.parametrize("text", ["US$ 5", "us$5", "USD 1.299", "$ 49.99", "$5", "EUR 5",
                                  "€ 5", "£5", "R$ US$ 5", "USD5", "5 USD", "5€", "5 eur",
                                  "5$"])
def test_a_price_in_another_currency_is_refused(text):
    """The pages show every price in reais: "US$ 49.99" was shown as "R$ 49,99" (helper-146)."""
    with pytest.raises(CatalogError, match="is not in reais"):
        parse_price(text)


def test_a_zero_price_keeps_no_sign():
    """`PATCH {"price": -0.0}` passes the API's ge=0: a Milvus store kept the sign (the
    embedded store's SQLite drops it), and its product page showed "R$ -0,00"."""
    import math

    assert math.copysign(1, Product("a", Path("a.jpg"), price=-0.0).price) == 1


def test_a_price_above_a_trillion_is_a_mistake():
    """A product code pasted into the price column: refused, not shown as R$ 9 trillion."""
    assert parse_price("1.000.000.000.000") == 1e12
    with pytest.raises(CatalogError, match="not a valid price"):
        parse_price("9999999999999")


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


def test_excel_brazil_export_is_read(tmp_path):
    """What Excel writes in Brazil: semicolons, Windows-1252, CRLF, Portuguese headers in any
    case and accents, Windows path separators, a file name in another case, a price 'sob
    consulta', a quoted description over two lines, trailing empty cells and rows."""
    photo(tmp_path / "relogios" / "R1.jpg")
    photo(tmp_path / "relogios" / "r2.jpg")
    table = ("Código;IMAGEM;Nome;Preço;Descrição;Cor;;\r\n"
             "A1;relogios\\R1.jpg;Relógio Dourado;R$ 1.299,90;\"Aço; pulseira\r\nde couro\";"
             "dourado;;\r\n"
             "A2;Relogios/R2.JPG;Relógio Prata;Sob consulta;\"Prata\rlisa\";\"a\r\n\";;\r\n"
             ";;;;;;;\r\n")
    (tmp_path / "Produtos.CSV").write_bytes(table.encode("cp1252"))
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert set(products) == {"A1", "A2"}  # both photos matched: none added as unlisted
    a1, a2 = products["A1"], products["A2"]
    assert a1.image == (tmp_path / "relogios" / "R1.jpg").resolve()
    assert a2.image == (tmp_path / "relogios" / "r2.jpg").resolve()
    assert (a1.name, a1.price, a1.category) == ("Relógio Dourado", 1299.90, "relogios")
    # a cell's line ends read as "\n" (the API and the pages gave "\r\n": helper-394)
    assert a1.description == "Aço; pulseira\nde couro" and a1.attributes == {"Cor": "dourado"}
    assert a2.price is None and a2.name == "Relógio Prata"
    assert (a2.description, a2.attributes) == ("Prata\nlisa", {"Cor": "a"})


def test_utf8_with_one_stray_byte_is_not_read_as_windows_1252(tmp_path):
    """One Windows-1252 byte pasted into a UTF-8 table made the whole file Windows-1252: its
    accented photo paths were 'not found' and their products removed from the store, and
    after a byte-order mark the id column became 'ï»¿id', so every id changed."""
    photo(tmp_path / "relógio" / "1.jpg")
    photo(tmp_path / "bolsa" / "b1.jpg")
    table = tmp_path / "products.csv"
    good = "id,image,name\nR1,relógio/1.jpg,Relógio dourado\nB1,bolsa/b1.jpg,Bolsa\n"
    for mark in (b"", b"\xef\xbb\xbf"):
        table.write_bytes(mark + good.encode() + "B2,bolsa/b1.jpg,Bolsa café\n".encode("cp1252"))
        with pytest.raises(CatalogError, match=r"products\.csv line 4: byte 0xe9 is not UTF-8, "
                                               r"while the rest of the file is"):
            read_catalog(tmp_path)
        table.write_bytes(mark + good.encode())
        assert {p.product_id for p in read_catalog(tmp_path)} == {"R1", "B1"}
    # a Windows-1252 table is still read as one, even with pairs of its characters that
    # UTF-8 would take as one character ("É®" is \xc9\xae, "É”" \xc9\x94)
    table.write_bytes("id,image,name\nR1,relógio\\1.jpg,Camiseta PELÉ”\n"
                      "B1,bolsa/b1.jpg,CAFÉ® 500g\n".encode("cp1252"))
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert [products["R1"].name, products["B1"].name] == ["Camiseta PELÉ”", "CAFÉ® 500g"]


def test_every_problem_of_the_table_is_named_with_its_line(tmp_path):
    photo(tmp_path / "a" / "1.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image,description,price\n"
        "p1,a/1.jpg,\"two\nlines\",abc\n"          # starts on line 2, ends on 3
        "p2,https://cdn.loja.com/p2.jpg,,\n"       # line 4
        "p1,a/1.jpg,,10\n"                         # line 5: p1 again
        "p3,,,\n")                                 # line 6
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)
    text = str(info.value)
    assert "4 problems" in text
    assert "line 2: price 'abc'" in text and "line 4: image 'https://cdn.loja.com/p2.jpg' " \
        "is an address on the web" in text
    assert "line 5: product_id 'p1' appears twice" in text
    assert "line 6: the image column is empty" in text


def test_a_table_without_an_image_column_names_its_columns(tmp_path):
    photo(tmp_path / "a" / "1.jpg")
    (tmp_path / "products.csv").write_text("id;foto_url\n1;a/1.jpg\n")
    with pytest.raises(CatalogError, match="no image column .*'id', 'foto_url'"):
        read_catalog(tmp_path)
    # each name cut at 40 characters, the first 12 of them: a line of a file that is not a
    # table is not printed whole
    (tmp_path / "products.csv").write_text(";".join(f"c{i}" + "x" * 60 for i in range(20))
                                           + "\n")
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)
    assert "'c0" + "x" * 38 + "'…, " in str(info.value) and "c12" not in str(info.value)


def test_two_product_tables_are_refused(tmp_path):
    """products.csv and produtos.csv (or PRODUCTS.csv) side by side: one was read and the
    other's rows dropped without a word, which one by the folder's order."""
    photo(tmp_path / "cat" / "a" / "1.jpg")
    (tmp_path / "cat" / "products.csv").write_text("id,image,name\nA1,a/1.jpg,From products\n")
    (tmp_path / "cat" / "produtos.csv").write_text("id,image,name\nZ9,a/1.jpg,From produtos\n")
    with pytest.raises(CatalogError, match=r"holds 2 product tables \(products\.csv, "
                                           r"produtos\.csv\); keep one\."):
        read_catalog(tmp_path / "cat")
    (tmp_path / "cat" / "produtos.csv").unlink()
    assert [p.name for p in read_catalog(tmp_path / "cat")] == ["From products"]
    # two names of one file (a link, a hard link) are one table
    (tmp_path / "cat" / "produtos.csv").symlink_to("products.csv")
    assert [p.name for p in read_catalog(tmp_path / "cat")] == ["From products"]
    (tmp_path / "cat" / "produtos.csv").unlink()
    (tmp_path / "cat" / "PRODUCTS.csv").hardlink_to(tmp_path / "cat" / "products.csv")
    assert [p.name for p in read_catalog(tmp_path / "cat")] == ["From products"]
    (tmp_path / "cat" / "produtos.csv").write_text("id,image\nZ9,a/1.jpg\n")  # a third name
    with pytest.raises(CatalogError, match=r"holds 2 product tables \(PRODUCTS\.csv = "
                                           r"products\.csv, produtos\.csv\)"):
        read_catalog(tmp_path / "cat")


def test_a_product_table_linked_from_outside_the_catalogue_is_refused(tmp_path):
    """A supplier's zip with products.csv linked to /proc/self/environ printed the
    server's environment (its API key, its Milvus token) as the table's columns."""
    photo(tmp_path / "cat" / "a" / "1.jpg")
    secret = tmp_path / "environ"
    secret.write_text("VITRINE_API_KEY=s3cret\0HOME=/root\0")
    (tmp_path / "cat" / "products.csv").symlink_to(secret)
    with pytest.raises(CatalogError, match=r"products\.csv is a link to a file outside the "
                                           r"catalogue folder") as info:
        read_catalog(tmp_path / "cat")
    assert "s3cret" not in str(info.value)
    (tmp_path / "cat" / "products.csv").unlink()  # a link within it is its own table
    (tmp_path / "cat" / "tables").mkdir()
    (tmp_path / "cat" / "tables" / "t.csv").write_text("id,image\nP1,a/1.jpg\n")
    (tmp_path / "cat" / "products.csv").symlink_to(tmp_path / "cat" / "tables" / "t.csv")
    assert [p.product_id for p in read_catalog(tmp_path / "cat")] == ["P1"]
    # a split folder's table linked to one beside it, in the catalogue: its own
    from vitrine.split import read_catalogue

    split = tmp_path / "split"
    for part in ("train", "test"):
        photo(split / part / "a" / f"{part}.jpg")
    (split / "tables").mkdir()
    (split / "tables" / "train.csv").write_text("id,image\nT1,a/train.jpg\n")
    (split / "train" / "products.csv").symlink_to(Path("..") / "tables" / "train.csv")
    products, given, _ = read_catalogue(split)
    assert sorted(given.values()) == ["test", "train"]
    assert any(p.product_id.endswith("T1") for p in products)


def test_a_quote_left_open_is_named_instead_of_swallowing_the_rows_below(tmp_path):
    """A stray quote made the rest of the table one name: those products were removed and
    came back as unlisted photos without names or prices, exit 0."""
    for name in "ABC":
        photo(tmp_path / "relogios" / f"{name}.jpg")
    table = tmp_path / "products.csv"
    rows = ["id,image,name,price", '"A,relogios/A.jpg,Watch A,10', "B,relogios/B.jpg,Watch B,20",
            "C,relogios/C.jpg,Watch C,30"]
    table.write_text("\n".join(rows) + "\n")
    with pytest.raises(CatalogError, match=r"products.csv line 2: a quote \(\"\) opens a value "
                                           "that takes in the rows below it"):
        read_catalog(tmp_path)
    # closed by a later quote, a doubled one as Excel writes: the rows between were taken in
    rows[3] = 'C,relogios/C.jpg,"Relógio 12"" dial",30'
    table.write_text("\n".join(rows) + "\n")
    with pytest.raises(CatalogError, match="line 2: a quote"):
        read_catalog(tmp_path)
    rows[1] = 'A,relogios/A.jpg,"Watch A,10'  # the last field, and the file's last line
    table.write_text("\n".join(rows[:2]))
    with pytest.raises(CatalogError, match="line 2: a quote"):
        read_catalog(tmp_path)
    table.write_text('id,"image,name\nA,relogios/A.jpg,W\n')
    with pytest.raises(CatalogError, match="line 1: a quote"):
        read_catalog(tmp_path)
    # what a quote may do: a value over two lines, a doubled quote, a quote inside a value
    table.write_text('id,image,name\nA,relogios/A.jpg,"two\nlines, with a comma"\n'
                     'B,relogios/B.jpg,"12"" dial"\nC,relogios/C.jpg,"12" dial')
    names = {p.product_id: p.name for p in read_catalog(tmp_path)}
    assert names == {"A": "two\nlines, with a comma", "B": '12" dial', "C": "12 dial"}


def test_blank_rows_above_the_header_and_an_empty_table(tmp_path):
    """Rows of blanks or bare separators above the header made the first of them the header
    ("its columns are ."); a table with no row at all says it is empty."""
    photo(tmp_path / "relogios" / "A.jpg")
    table = tmp_path / "products.csv"
    table.write_text(";;;\r\n\r\n  \r\nid;image;name\r\nA;relogios/A.jpg;Relógio\r\n")
    assert [(p.product_id, p.name) for p in read_catalog(tmp_path)] == [("A", "Relógio")]
    for text in ("", "\n\n", ";;;\n"):
        table.write_text(text)
        with pytest.raises(CatalogError, match="products.csv is empty: give it a header row"):
            read_catalog(tmp_path)
    for text in ("id;image;name\r\n", "id,image,name\n\n,,\n  \n"):  # a header and no
        # row (an export of an emptied sheet) made every photo a product of its own, named by
        # its file, and re-indexing dropped every name and price (helper-179)
        table.write_text(text)
        with pytest.raises(CatalogError, match="products.csv lists no products"):
            read_catalog(tmp_path)


def store_and_model_inside(catalog: Path) -> None:
    """A category with a photo, a store (``loja``, one upload) and a model (``modelo``, its
    figure) kept inside the catalogue folder."""
    photo(catalog / "bolsas" / "1.jpg")
    photo(catalog / "loja" / "uploads" / "ab12.jpg")
    (catalog / "loja" / "vitrine.sqlite").write_bytes(b"")
    photo(catalog / "modelo" / "history.png")
    (catalog / "modelo" / "model.json").write_text('{"format": "vitrine-trained-model/1"}')


def test_store_and_model_folders_are_not_catalogue_photos(tmp_path):
    """A store kept inside the catalogue (its uploads) and a model folder (its figures) are
    skipped; a category folder that is a symbolic link is read, a link loop ends."""
    store_and_model_inside(tmp_path / "cat")
    photo(tmp_path / "elsewhere" / "tenis" / "2.png")
    (tmp_path / "cat" / "tenis").symlink_to(tmp_path / "elsewhere" / "tenis")
    (tmp_path / "cat" / "bolsas" / "loop").symlink_to(tmp_path / "cat")
    (tmp_path / "cat" / "bolsas" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    ids = [p.product_id for p in read_catalog(tmp_path / "cat")]
    # the broken link is listed, so index skips it with "file not found" instead of silence
    assert ids == ["bolsas/1.jpg", "bolsas/gone.jpg", "tenis/2.png"]


def test_another_tools_model_json_leaves_its_folder_in_the_catalogue(tmp_path):
    """A product's specification saved as model.json in a category folder made the scan
    take that folder for a Vitrine model: all its photos were left out without a word (and
    index removed their products). A model folder is known by its format or its weights."""
    store_and_model_inside(tmp_path)
    photo(tmp_path / "specs" / "1.jpg")
    (tmp_path / "specs" / "model.json").write_text('{"name": "spring model", "format": "A4"}')
    photo(tmp_path / "tfjs" / "2.jpg")
    (tmp_path / "tfjs" / "model.json").write_text("[not json")
    photo(tmp_path / "older" / "3.jpg")  # a model whose model.json is damaged: its weights
    (tmp_path / "older" / "model.json").write_text("")
    (tmp_path / "older" / "model.pt").write_bytes(b"weights")
    (tmp_path / "products.csv").write_text("id,image\ns1,specs/1.jpg\nt2,tfjs/2.jpg\n")
    assert [p.product_id for p in read_catalog(tmp_path)] == ["bolsas/1.jpg", "s1", "t2"]


def test_a_table_row_cannot_name_a_photo_in_a_store_or_model_folder(tmp_path):
    """The folder scan leaves out stores' and models' folders; the product table cannot bring
    their photos back in (an upload would become a catalogue product): each such row is a
    problem named before indexing, as the scan's other rules are."""
    store_and_model_inside(tmp_path)
    (tmp_path / "vitrine.sqlite").write_bytes(b"")  # the catalogue folder is a store too
    photo(tmp_path / "uploads" / "cd34.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image\np1,bolsas/1.jpg\np2,loja/uploads/ab12.jpg\np3,modelo/history.png\n"
        "p4,uploads/cd34.jpg\n")
    with pytest.raises(CatalogError) as caught:
        read_catalog(tmp_path)
    message = str(caught.value)
    for line, folder in ((3, "loja"), (4, "modelo"), (5, "uploads")):
        assert f"line {line}: image" in message and f"store or model folder ({folder})" in message
    assert "line 2" not in message
    (tmp_path / "products.csv").write_text("product_id,image\np1,bolsas/1.jpg\n")
    assert [p.product_id for p in read_catalog(tmp_path)] == ["p1"]


def test_a_listed_photo_may_be_a_symbolic_link(tmp_path):
    target = photo(tmp_path / "shared" / "x.jpg")
    (tmp_path / "cat" / "bolsas").mkdir(parents=True)
    (tmp_path / "cat" / "bolsas" / "x.jpg").symlink_to(target)
    (tmp_path / "cat" / "products.csv").write_text("product_id,image\nb1,bolsas/x.jpg\n")
    products = read_catalog(tmp_path / "cat")
    assert [(p.product_id, p.category) for p in products] == [("b1", "bolsas")]


def test_jfif_and_avif_photos_are_products(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jfif", format="JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.avif", format="AVIF")
    assert [p.product_id for p in read_catalog(tmp_path)] == ["a.jfif", "b.avif"]


def test_columns_named_twice_and_separators_in_header_names(tmp_path):
    """A column named exactly as a field takes it before an alias does ('sku' beside
    'product_id' is an attribute, not an overwritten id); a semicolon table whose header names
    hold commas is still read as semicolons; Excel's 'Unicode text' (UTF-16) is read."""
    photo(tmp_path / "bolsa" / "a.jpg")
    (tmp_path / "products.csv").write_text("sku,product_id,name,image\nS1,P1,Bolsa,bolsa/a.jpg\n")
    [product] = read_catalog(tmp_path)
    assert product.product_id == "P1" and product.attributes == {"sku": "S1"}
    (tmp_path / "products.csv").write_text(
        "codigo;imagem;Tamanhos (P, M, G)\nP1;bolsa/a.jpg;P, M\n")
    [product] = read_catalog(tmp_path)
    assert product.product_id == "P1" and product.attributes == {"Tamanhos (P, M, G)": "P, M"}
    (tmp_path / "products.csv").write_bytes(
        "product_id\timage\tpreço\r\nP2\tbolsa\\a.jpg\tR$ 10,00\r\n".encode("utf-16"))
    [product] = read_catalog(tmp_path)
    assert (product.product_id, product.price) == ("P2", 10.0)


def test_image_cells_that_can_never_be_a_photo_are_table_problems(tmp_path):
    photo(tmp_path / "bolsa" / "a.jpg")
    photo(tmp_path / "bolsa" / "A.jpg")
    (tmp_path / "products.csv").write_text(
        "id,image\nP1,bolsa/a.JPG\nP2,bolsa\nP3,products.csv\nP4,C:\\fotos\\a.jpg\n"
        "P5,bolsa/a.jpg\n")
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)
    text = str(info.value)
    assert "4 problems" in text
    assert "line 2: image 'bolsa/a.JPG' matches files whose names differ only in case or " \
        "accents' encoding (bolsa/A.jpg, bolsa/a.jpg)" in text
    assert "line 3: image 'bolsa' is a folder" in text
    assert "line 4: image 'products.csv' is not a photo file" in text
    assert "line 5: image 'C:\\fotos\\a.jpg' is a path on a Windows drive" in text


def test_an_image_cell_with_a_control_character_is_a_table_problem(tmp_path):
    """A NUL or line break pasted into a path names no file; it is the table's problem with its
    line, not a failure when the photo is read."""
    photo(tmp_path / "bolsa" / "a.jpg")
    (tmp_path / "products.csv").write_text('id,image\nP1,"bolsa/a.jpg\0.jpg"\n'
                                           'P2,"bolsa/a.jpg\n"\n')
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)
    assert "line 2: image 'bolsa/a.jpg\\x00.jpg' holds a control character" in str(info.value)
    assert "line 3" not in str(info.value)  # the cell's trailing line break is trimmed


def test_a_table_id_that_is_another_unlisted_photos_path_is_refused(tmp_path):
    """An unlisted photo's id is its path; a row that gives that id to another photo would
    drop the unlisted one without a word."""
    photo(tmp_path / "a" / "1.jpg")
    photo(tmp_path / "b" / "1.jpg")
    (tmp_path / "products.csv").write_text("id,image\nb/1.jpg,a/1.jpg\n")
    with pytest.raises(CatalogError, match="gives product_id 'b/1.jpg' to photo a/1.jpg, but "
                                           "b/1.jpg is another photo the table does not list"):
        read_catalog(tmp_path)


def test_accents_written_either_way_match_the_photo(tmp_path):
    """A Mac names files with decomposed accents (e + combining acute); a table typed elsewhere
    has the composed character. The row finds its photo, which is then not also unlisted."""
    import unicodedata

    name = unicodedata.normalize("NFD", "relógio/café.jpg")
    photo(tmp_path / name)
    photo(tmp_path / "relógio" / "chá.jpg")
    (tmp_path / "products.csv").write_text(
        "id,image\nP1,relógio/café.jpg\n" + unicodedata.normalize("NFD", "P2,relógio/chá.jpg\n"))
    products = read_catalog(tmp_path)
    assert [(p.product_id, p.unlisted) for p in products] == [("P1", False), ("P2", False)]
    assert products[0].image == tmp_path.resolve() / name


def test_a_category_written_with_either_accent_form_is_one_category(tmp_path):
    """Folders copied from a Mac (decomposed accents) next to others, or a table saved by
    Excel (composed ones), name one category: training made two classes "Relógio"."""
    import unicodedata

    composed, decomposed = "Relógio", unicodedata.normalize("NFD", "Relógio")
    photo(tmp_path / decomposed / "a.jpg")
    photo(tmp_path / composed / "b.jpg")
    assert {p.category for p in read_catalog(tmp_path)} == {composed}
    (tmp_path / "products.csv").write_text(f"image,category\n{decomposed}/a.jpg,{composed}\n"
                                           f"{composed}/b.jpg,{decomposed}\n")
    products = read_catalog(tmp_path)
    assert [p.category for p in products] == [composed, composed]
    assert recategorised(products) == []  # not "moved" to the category it is in


def test_a_disk_that_finds_names_in_any_case_or_form_still_gives_one_product(tmp_path,
                                                                             monkeypatch):
    """A Mac's disk opens 'Bolsa/A.JPG' or a composed 'é' for the file 'bolsa/a.jpg' or a
    decomposed one: the row must still take the scanned file, or that photo is a second,
    unlisted product."""
    import unicodedata

    photo(tmp_path / "bolsa" / "a.jpg")
    photo(tmp_path / unicodedata.normalize("NFD", "relógio/café.jpg"))
    (tmp_path / "products.csv").write_text("id,image\nP1,Bolsa/A.JPG\nP2,relógio/café.jpg\n")
    real = {unicodedata.normalize("NFC", str(p)).casefold() for p in tmp_path.resolve().rglob("*")}
    exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: exists(self, **kw) or unicodedata
                        .normalize("NFC", str(self)).casefold() in real)
    products = read_catalog(tmp_path)
    assert [(p.product_id, p.unlisted) for p in products] == [("P1", False), ("P2", False)]


def test_links_inside_the_catalogue_and_a_store_at_its_root_add_no_photos(tmp_path):
    """A link to one of the catalogue's own folders would read its photos again under another
    category; a store kept in the catalogue folder itself keeps its uploads out of it."""
    photo(tmp_path / "bolsa" / "a.jpg")
    photo(tmp_path / "salto" / "b.jpg")
    (tmp_path / "bolsa" / "loop").symlink_to(tmp_path / "salto")
    (tmp_path / "vitrine.sqlite").write_bytes(b"")
    photo(tmp_path / "uploads" / ("ab" * 32 + ".jpg"))
    products = read_catalog(tmp_path)
    assert [(p.product_id, p.category) for p in products] == [("bolsa/a.jpg", "bolsa"),
                                                              ("salto/b.jpg", "salto")]


def test_a_macos_resource_fork_file_is_not_a_product(tmp_path):
    """A Mac copies '._a.jpg' (a hidden resource fork, not a photo) next to 'a.jpg'; it must
    not become a product that fails to read."""
    photo(tmp_path / "bolsa" / "a.jpg")
    (tmp_path / "bolsa" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    assert [p.product_id for p in read_catalog(tmp_path)] == ["bolsa/a.jpg"]


def test_a_listed_product_without_a_name_is_named_after_its_photo(tmp_path):
    """A table row with an empty name gives the product its photo's file name (without the
    extension), as an unlisted photo gets, not an empty name."""
    photo(tmp_path / "tenis" / "runner-42.jpg")
    photo(tmp_path / "tenis" / "2.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image,name\np1,tenis/runner-42.jpg,\np2,tenis/2.jpg,Tênis Azul\n")
    products = read_catalog(tmp_path)
    assert [(p.product_id, p.name) for p in products] == [("p1", "runner-42"),
                                                         ("p2", "Tênis Azul")]


def test_an_id_of_dots_with_spaces_around_is_refused():
    """' .. ' is still '..' once a browser trims the address: it cannot be a product id."""
    from vitrine.catalog import id_problem

    assert id_problem(" .. ") is not None and "'.' or '..'" in id_problem(" .. ")
    assert id_problem(". ") is not None
    assert id_problem("..a") is None


def test_a_utf8_table_with_a_byte_order_mark_reads_its_first_column(tmp_path):
    """Excel's 'CSV UTF-8' starts with a byte-order mark: the first column is still
    'product_id' (not an unknown '\\ufeffproduct_id' attribute, which gave every product its
    path as id)."""
    photo(tmp_path / "a" / "1.jpg")
    (tmp_path / "products.csv").write_bytes("\ufeffproduct_id,image\nP1,a/1.jpg\n"
                                            .encode("utf-8"))
    products = read_catalog(tmp_path)
    assert [p.product_id for p in products] == ["P1"]
    assert products[0].attributes == {}


def test_a_table_with_many_problems_names_the_first_five_and_counts_the_rest(tmp_path):
    """Seven bad rows: the message counts all seven, names the first five lines and says
    how many more there are, instead of a wall of text."""
    photo(tmp_path / "a" / "1.jpg")
    rows = "".join(f"p{i},a/1.jpg,abc\n" for i in range(7))
    (tmp_path / "products.csv").write_text("product_id,image,price\n" + rows)
    with pytest.raises(CatalogError) as info:
        read_catalog(tmp_path)
    text = str(info.value)
    assert "has 7 problems: line 2: " in text
    assert all(f"line {n}: " in text for n in range(2, 7))
    assert "line 7: " not in text and "line 8: " not in text
    assert text.endswith(" (and 2 more).")


def test_a_column_name_with_a_hyphen_or_dot_is_the_field(tmp_path):
    """'Product-ID' and 'Image.Path' are the product_id and image_path columns, as
    'product id' is: hyphens and dots compare like spaces."""
    photo(tmp_path / "a" / "1.jpg")
    (tmp_path / "products.csv").write_text("Product-ID,Image.Path\nP1,a/1.jpg\n")
    [product] = read_catalog(tmp_path)
    assert product.product_id == "P1" and product.attributes == {}


def test_text_folds_the_german_sharp_s_like_ss():
    """Case folding, not lower-casing: a shopper typing 'strasse' finds 'Straße', and
    'AÇAÍ' and 'açaí' compare equal."""
    from vitrine.fold import fold, searchable

    assert fold("Straße") == "strasse" == fold("STRASSE")
    assert fold("AÇAÍ") == fold("açaí") == "acai"
    assert searchable("Straße\nAzul") == "strasse azul"


def test_a_system_folder_or_one_gone_meanwhile_does_not_stop_the_scan(tmp_path, monkeypatch):
    """A folder that cannot be listed stops the scan (its photos would be left out and their
    products removed), but not a NAS's or the file system's own folders, unreadable to the
    user, nor a folder removed while the scan ran."""
    import os
    import shutil

    from vitrine.catalog import scan_images

    for folder in ("bolsas", "#recycle", "lost+found", "gone", "locked", "@eaDir"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "a.jpg")
    scandir = os.scandir
    refused = {"#recycle": PermissionError, "lost+found": PermissionError,
               "gone": FileNotFoundError, "locked": PermissionError}

    def listing(path="."):
        if isinstance(path, int):  # (rmtree lists by descriptor)
            return scandir(path)
        if (kind := refused.get(Path(path).name)) is not None:
            if Path(path).name == "gone" and kind is FileNotFoundError:
                shutil.rmtree(path)  # (removed meanwhile)
            raise kind(13, "refused", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", listing)
    with pytest.raises(CatalogError, match=r"locked: the folder cannot be read \(refused\)"):
        scan_images(tmp_path)
    del refused["locked"]
    # (@eaDir, readable: a NAS's thumbnails of the photos, not photos of the shop)
    assert scan_images(tmp_path) == [tmp_path / "bolsas" / "a.jpg",
                                     tmp_path / "locked" / "a.jpg"]
    # a share that says a folder it still lists is not found: not believed
    (tmp_path / "gone").mkdir()
    refused["gone"] = FileNotFoundError
    monkeypatch.setattr(shutil, "rmtree", lambda path: None)
    with pytest.raises(CatalogError, match=r"gone: the folder cannot be read"):
        scan_images(tmp_path)


def test_an_image_cell_too_long_for_the_system_is_one_of_the_tables_problems(tmp_path):
    """A 5,000-character image cell ended the table's check with the system's "File name too
    long", naming no line and hiding the table's other problems (helper-153)."""
    photo(tmp_path / "bolsa" / "a.jpg")
    (tmp_path / "products.csv").write_text(
        "product_id,image\np0,bolsa/a.jpg\np1,../../etc/passwd\n"
        f"p2,bolsa/{'a' * 5000}.jpg\n")
    with pytest.raises(CatalogError) as refused:
        read_catalog(tmp_path)
    said = str(refused.value)
    assert "has 2 problems: line 3: image '../../etc/passwd' is outside" in said
    assert "line 4: image 'bolsa/aaaa" in said and "cannot be a file here" in said
    assert len(said) < 700  # (the cell is cut, not repeated whole)


def test_catalogue_state_sees_changes_and_survives_odd_links(tmp_path):
    """What `vitrine index` compares under the writer lock to tell whether the catalogue
    changed since it read it (it reads it again then): photos added, removed or renamed and
    the table rewritten change it, an unchanged folder does not. A link to a table that is
    not there did not stop it there (the folders after it were not looked at: a photo added
    meanwhile went unseen), and a catalogue that is a link loop is left to the reading to
    say (a RuntimeError's traceback: helper-185)."""
    from vitrine.catalog import catalogue_state

    shop = tmp_path / "shop"
    for folder in "abcdefgh":
        photo(shop / folder / "1.jpg")
    (shop / "Produtos.csv").symlink_to(tmp_path / "gone.csv")  # (scandir may list it first)
    before = catalogue_state(shop)
    assert before == catalogue_state(shop)
    assert any(item[0].endswith("/h") for item in before)
    photo(shop / "h" / "2.jpg")
    added = catalogue_state(shop)
    assert added != before
    (shop / "h" / "2.jpg").rename(shop / "h" / "3.jpg")
    assert catalogue_state(shop) != added
    (shop / "Produtos.csv").unlink()
    (shop / "products.csv").write_text("image,name\na/1.jpg,Um\n")
    written = catalogue_state(shop)
    with open(shop / "products.csv", "a") as fh:  # rewritten in place, same folder entries
        fh.write("b/1.jpg,Dois\n")
    assert catalogue_state(shop) != written
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert catalogue_state(loop) == ((str(loop), errno.ELOOP),)  # (noted as unreadable)
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(loop)


def test_categories_in_the_order_a_reader_expects():
    """`vitrine info` and the pages' category field: case, accents and underscores aside
    ("Óculos" came after "x_tenis", "Relógio Feminino" before "mocassim": helper-230)."""
    from vitrine.catalog import reader_order

    counts = {"Relógio Feminino": 8, "mocassim_masculino": 5, "x_tenis": 3, "Óculos de Sol": 2,
              "relogio_feminino": 1, "": 4}
    assert list(reader_order(counts)) == ["", "mocassim_masculino", "Óculos de Sol",
                                          "Relógio Feminino", "relogio_feminino", "x_tenis"]
    assert reader_order(counts)["Relógio Feminino"] == 8


def test_a_quoted_value_holding_the_other_separator_does_not_change_the_tables(tmp_path):
    """csv.Sniffer reads quoted values first: a semicolon table as Excel in Brazil writes it,
    one description holding ``, "premium",`` (quotes doubled inside quotes), was taken for a
    comma table of one column ("no image column; its columns are 'codigo;imagem;…'"), and a
    comma table holding ``; "nude";`` for a semicolon one."""
    photo(tmp_path / "bolsa" / "a.jpg")
    photo(tmp_path / "bolsa" / "b.jpg")
    (tmp_path / "produtos.csv").write_bytes(
        'codigo;imagem;nome;preço;descrição\r\n'
        'B1;bolsa\\a.jpg;Bolsa Couro;129,90;"Couro, ""premium"", alça"\r\n'
        'B2;bolsa\\b.jpg;Bolsa Tiracolo;99,90;Leve\r\n'.encode("cp1252"))
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert set(products) == {"B1", "B2"}
    assert products["B1"].description == 'Couro, "premium", alça'
    assert products["B1"].price == 129.90
    (tmp_path / "produtos.csv").unlink()
    (tmp_path / "products.csv").write_text(
        'id,image,name,description\nB1,bolsa/a.jpg,Bolsa,"Cores: preto; ""nude""; azul"\n'
        'B2,bolsa/b.jpg,Tiracolo,Leve\n')
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert products["B1"].description == 'Cores: preto; "nude"; azul'


def test_an_id_with_a_c1_control_character_is_refused():
    """U+0085 (NEL) is a line break and U+0080-U+009F control characters, as \\n is: the API
    took 'a\\x85b' as a product id (201) where 'a\\nb' was a 422 (helper-343)."""
    from vitrine.catalog import id_problem

    for bad in ("a\x85b", "a\x89", "\x9f"):
        assert "control character" in (id_problem(bad) or ""), repr(bad)
    assert id_problem("Relógio ½ €") is None
