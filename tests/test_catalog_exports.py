"""Product tables as spreadsheets in Brazil and Europe export them."""

from __future__ import annotations

import pytest
from PIL import Image

from vitrine.catalog import parse_price, read_catalog
from vitrine.errors import CatalogError


def photo(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)
    return path


def test_excels_sep_line_names_the_separator(tmp_path):
    """Excel's first line ``sep=;`` (written by shops' exports meant for Excel) was taken for
    the header: "no image column; its columns are 'sep=', ''"; any one character may be named
    there, and lines keep their numbers in errors."""
    photo(tmp_path / "relogios" / "a.jpg")
    table = tmp_path / "produtos.csv"
    table.write_bytes("sep=;\r\nCódigo;Imagem;Nome;Preço;Descrição\r\n"
                      'R1;relogios\\a.jpg;Relógio;1.234,56;"Aço; couro"\r\n'.encode("cp1252"))
    [product] = read_catalog(tmp_path)
    assert (product.product_id, product.name, product.price, product.description) == (
        "R1", "Relógio", 1234.56, "Aço; couro")
    for text in ("sep=|\nid|image|name\nR1|relogios/a.jpg|Relógio\n",
                 '\ufeff"sep=|"|||\r\nid|image|name\r\nR1|relogios/a.jpg|Relógio\r\n',
                 "SEP=,\nid,image,name\nR1,relogios/a.jpg,Relógio\n"):
        table.write_text(text, encoding="utf-8")
        [product] = read_catalog(tmp_path)
        assert (product.product_id, product.name) == ("R1", "Relógio")
    table.write_text("sep=;\nid;image;price\nR1;relogios/a.jpg;abc\n")
    with pytest.raises(CatalogError, match="line 3: price 'abc'"):
        read_catalog(tmp_path)
    table.write_text("sep=;\r\n")
    with pytest.raises(CatalogError, match="is empty"):
        read_catalog(tmp_path)


@pytest.mark.parametrize("header, encoding", [
    ("Código;Imagem;Nome;Preço;Tamanho, cor", "cp1252"),
    ("Código\tImagem\tNome\tPreço\tTamanho, cor", "utf-16"),  # Excel's "Unicode text"
])
def test_a_comma_in_a_column_name_leaves_the_tables_separator(tmp_path, header, encoding):
    """A decimal comma in every row's price and one comma in a column name: csv.Sniffer,
    preferring a comma, took an Excel table of Brazil for a comma table ("no image column;
    its columns are 'Código;Imagem;Nome;Preço;Tamanho', ' cor'")."""
    photo(tmp_path / "bolsa" / "a.jpg")
    photo(tmp_path / "bolsa" / "b.jpg")
    sep = "\t" if "\t" in header else ";"
    rows = [header, sep.join(["B1", "bolsa\\a.jpg", "Bolsa", "129,90", "P"]),
            sep.join(["B2", "bolsa\\b.jpg", "Tiracolo", "99,90", "M"])]
    (tmp_path / "produtos.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode(encoding))
    products = {p.product_id: p for p in read_catalog(tmp_path)}
    assert set(products) == {"B1", "B2"}
    assert products["B1"].price == 129.90 and products["B1"].attributes == {
        "Tamanho, cor": "P"}


def test_a_comma_table_with_semicolons_in_its_header_names_stays_a_comma_table(tmp_path):
    photo(tmp_path / "bolsa" / "a.jpg")
    (tmp_path / "products.csv").write_text(
        "id,image,Cores; tamanhos; medidas\nB1,bolsa/a.jpg,azul\n")
    [product] = read_catalog(tmp_path)
    assert product.product_id == "B1" and product.attributes == {
        "Cores; tamanhos; medidas": "azul"}


@pytest.mark.parametrize("text, value", [
    ("1 299,90", 1299.9), ("1\u00a0299,90", 1299.9), ("1\u202f299,90", 1299.9),
    ("R$ 1\u00a0299,90", 1299.9), ("1'299.90", 1299.9), ("1\u2019299.90", 1299.9),
    ("12 345 678", 12345678.0), ("R$\u00a01.299,90", 1299.9), ("1\u2009299,90", 1299.9),
    ("1\u2007299,90", 1299.9), ("R$\u2009129,90", 129.9)])
def test_thousands_grouped_by_a_space_or_an_apostrophe(text, value):
    """What LibreOffice and Excel write in a French or Portuguese locale (a space, a
    non-breaking or a narrow no-break space between thousands) and in Switzerland (an
    apostrophe) was refused, one such cell stopping the whole index."""
    assert parse_price(text) == value


@pytest.mark.parametrize("text", ["1 299 90", "12 50", "1 2999", "1'299'9", "1 299 000,5.5",
                                  "1 299,90 €"])
def test_spaces_that_group_no_thousands_are_still_refused(text):
    with pytest.raises(CatalogError):
        parse_price(text)


def test_a_price_column_named_with_its_unit_in_reais_is_the_price(tmp_path):
    """"Preço (R$)", as Brazilian sheets name it, was kept as an attribute: every product
    indexed without its price, without a word. A column in another currency stays one (its
    prices would be shown as reais)."""
    photo(tmp_path / "bolsa" / "a.jpg")
    table = tmp_path / "produtos.csv"
    for name in ("Preço (R$)", "Valor R$", "price (BRL)"):
        table.write_text(f"imagem;{name}\nbolsa/a.jpg;1.299,90\n")
        [product] = read_catalog(tmp_path)
        assert (product.price, product.attributes) == (1299.9, {})
    table.write_text("imagem;Preço (US$)\nbolsa/a.jpg;10\n")
    [product] = read_catalog(tmp_path)
    assert product.price is None and product.attributes == {"Preço (US$)": "10"}


def test_a_title_is_looked_for_in_the_characters_before_the_sign(tmp_path, monkeypatch):
    """Each ordinal sign of a table's Windows-1252 reading that follows no digit searched
    the whole text before it for a title ("Srª", 01327ed): a Mac Roman table of 2,000 rows
    of a trade mark ("Casio™", Windows-1252's "Casioª") was read in 16 s, 4,000 in 76 s,
    the text searched growing with the square of the rows. Only the title's characters
    before the sign are searched now; the table is read as Mac Roman as before."""
    from vitrine import catalog_csv

    rows = 300
    for i in range(rows):
        photo(tmp_path / "relogios" / f"{i}.jpg")
    lines = ["id;image;name"] + [f"R{i};relogios/{i}.jpg;Relógio Casio™ {i}"
                                 for i in range(rows)]
    (tmp_path / "produtos.csv").write_bytes("\r".join(lines).encode("mac_roman"))
    searched, real = [], catalog_csv._ABBREVIATED

    class Counted:  # (the characters each search of a title is given to read)
        def search(self, text, pos=0, endpos=None):
            end = len(text) if endpos is None else min(endpos, len(text))
            searched.append(end - pos)
            return real.search(text, pos, end)

    monkeypatch.setattr(catalog_csv, "_ABBREVIATED", Counted())
    products = read_catalog(tmp_path)
    assert [p.name for p in products[:2]] == ["Relógio Casio™ 0", "Relógio Casio™ 1"]
    assert len(searched) >= rows  # (each "Casioª" of the Windows-1252 reading)
    assert max(searched) <= 16


@pytest.mark.parametrize("header", ["id;image;name;description",
                                    "id;image;name;description;tamanho, cor"])
def test_long_quoted_descriptions_do_not_hold_the_reading(tmp_path, monkeypatch, header):
    """csv.Sniffer's time grows with the square of a line's length: 20 rows of a 24 kB HTML
    description (quotes doubled, as Excel and Shopify write them) took about half a minute
    to find the separator (64 kB rows: minutes), before anything was indexed. A header of
    one separator is read by it, unsniffed; else the sniffer reads at most SNIFF_CHARS."""
    import csv

    read = []
    sniff = csv.Sniffer.sniff
    monkeypatch.setattr(csv.Sniffer, "sniff",
                        lambda self, sample, *a, **k: read.append(len(sample))
                        or sniff(self, sample, *a, **k))
    for n in range(20):
        photo(tmp_path / "bolsa" / f"{n}.jpg")
    html = '"' + '<p class=""destaque"">Couro, alça; zíper</p>' * 550 + '"'
    size = ";P" if header.endswith("cor") else ""
    rows = [header] + [f"B{n};bolsa/{n}.jpg;Bolsa {n};{html}{size}" for n in range(20)]
    (tmp_path / "products.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    products = read_catalog(tmp_path)
    assert all(size <= 16_000 for size in read), read  # (catalog_csv.SNIFF_CHARS)
    assert len(products) == 20 and products[0].description.startswith('<p class="destaque">')


@pytest.mark.parametrize("encoding, text", [
    ("mac_roman", "Relógio Café"), ("mac_roman", "Calçado infantil"),
    ("cp1252", "Relógio Café"), ("cp1252", "Bolsa d’água “nova” — 5"),
    # a Windows-1252 dash or œ inside a word is not Mac Roman's ó or ú ("SlimóFit ìClassicî
    # Ä49"); Mac Roman's "Coleção" (0x8d), capitals and a word-final é are not Windows-1252
    ("cp1252", "Slim—Fit “Classic” €49"), ("cp1252", "Pull Cœur – rouge"),
    ("cp1252", "Men’s shoes – size 10–12"), ("mac_roman", "Coleção Infantil"),
    ("mac_roman", "RELÓGIO FEMININO"), ("mac_roman", "CALÇA"), ("mac_roman", "Café Preto"),
    # a word-final ã is Windows-1252's ‹, an opening sign that no word ends with
    ("mac_roman", "Cachecol de Lã"), ("cp1252", "Bolsa ‹Luxo› preta"),
    # a tie of places: Portuguese letters decide ("îculos" is Windows-1252's reading); an
    # ordinal sign follows a digit ("Casioª" is Windows-1252's reading of Mac Roman's ™)
    ("mac_roman", "Óculos escuros"), ("cp1252", "Île de France"), ("mac_roman", "Casio™"),
    ("cp1252", "1ª linha"),
    # an N before º is número's: not Mac Roman's "N∫ 18" (every "Nº" counted for it)
    ("cp1252", "Anel Nº 18"), ("cp1252", "Chuteira nº 40"), ("cp1252", "Sapato N.º 39"),
    # a title's ordinal sign ("Srª", "Profª", "Exmº") is not Mac Roman's "Sr™"; a brand's
    # ™ still is Mac Roman's ("Sr" inside a word is no title)
    ("cp1252", "Perfume Srª Rosa"), ("cp1252", "Caneca da Profª"), ("cp1252", "Exmº Sr."),
    ("mac_roman", "ProDr™ creme"), ("mac_roman", "CREME SR™"), ("mac_roman", "Mr™ Limpo"),
])
def test_a_mac_roman_table_is_read_as_one(tmp_path, encoding, text):
    """Excel for Mac's "CSV (Macintosh)" writes Mac Roman with CR line ends: it was read as
    Windows-1252, "Relógio Café" stored as "Rel—gio CafŽ" without a word (or refused, for a
    "ç", a byte Windows-1252 has no character for). A Windows-1252 table stays one, its
    typographic signs (’ “ ” —) included."""
    photo(tmp_path / "bolsa" / "a.jpg")
    end = "\r" if encoding == "mac_roman" else "\r\n"
    for rows in (["Código;Imagem;Nome;Descrição", f"B1;bolsa/a.jpg;{text};Feito à mão"],
                 ["id;image;name;description", f"B1;bolsa/a.jpg;{text};"]):  # (text alone)
        (tmp_path / "produtos.csv").write_bytes((end.join(rows) + end).encode(encoding))
        [product] = read_catalog(tmp_path)
        assert (product.product_id, product.name) == ("B1", text)
        assert product.description == rows[1].rsplit(";", 1)[1]
