"""Reading a catalogue's product table as shops export it: semicolon, comma or tab separated
(Excel in Brazil writes semicolons), UTF-8, Windows-1252 or UTF-16, English or Portuguese
column names in any case, Windows path separators, blank rows."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from vitrine.errors import CatalogError
from vitrine.fold import fold
from vitrine.images import IMAGE_EXTENSIONS, is_image_path

CSV_NAMES = ("products.csv", "produtos.csv")
"""File names of the product table at the catalogue's root, in any case."""

COLUMN_ALIASES = {
    "product_id": ("product_id", "id", "sku", "codigo", "cod", "produto_id", "id_produto"),
    "image": ("image", "imagem", "foto", "photo", "image_path", "arquivo", "file"),
    "category": ("category", "categoria"),
    "name": ("name", "nome", "titulo", "title"),
    "price": ("price", "preco", "valor"),
    "description": ("description", "descricao"),
}
"""Recognised column names (compared without case, accents, spaces or hyphens) of each
field; any other column is kept as an attribute under its own name."""

NO_PRICE = frozenset({"sob consulta", "consulte", "a consultar", "-", "–", "—", "n/a"})
"""Price cells that say the price is not published: read as unknown, like a blank cell."""

MAX_REPORTED = 5
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_DRIVE = re.compile(r"^[a-z]:[\\/]", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # (C1 too: U+0085 is a line break)
"""Characters no product id or photo path may hold (no web address carries them)."""


@dataclass
class Row:
    """One product row: the fields by their canonical names, the other columns, and the
    file line it starts on."""

    line: int
    fields: dict[str, str]
    extra: dict[str, str]


def find_csv(root: Path, catalogue: Path | None = None) -> Path | None:
    """The product table at ``root``: ``products.csv`` or ``produtos.csv``, any case. One
    that is a link to a file outside the catalogue (``root``, or ``catalogue`` that holds
    it: a split folder's table may link to one beside it) is refused: a supplier's zip
    linking it to /proc/self/environ or /etc/shadow had its first line, the server's
    secrets, printed in the error that it has no image column."""
    tables: dict[object, list[Path]] = {}  # by file: two names of one file are one table
    for entry in os.scandir(root):
        if entry.name.casefold() in CSV_NAMES and entry.is_file():
            st = entry.stat()
            tables.setdefault((st.st_dev, st.st_ino), []).append(Path(entry.path))
    if len(tables) > 1:  # (one was read, the other's rows dropped without a word; which
        # one, by the folder's order)
        names = sorted(" = ".join(sorted(p.name for p in paths)) for paths in tables.values())
        raise CatalogError(f"{root} holds {len(tables)} product tables ("
                           + ", ".join(names) + "); keep one.")
    table = min(next(iter(tables.values())), key=lambda p: (p.is_symlink(), p.name)
                ) if tables else None
    if table is not None and table.is_symlink() and not table.resolve().is_relative_to(
            Path(catalogue or root).resolve()):
        raise CatalogError(f"{table} is a link to a file outside the catalogue folder; copy "
                           "the product table into it.")
    return table


def tables_below(root: Path) -> list[Path]:
    """The product tables in the folders of ``root`` (a catalogue's categories), which are
    never read: only one in the catalogue folder itself is. Said by ``index`` when there is
    none there: a table put in a category folder had its names and prices left out without
    a word, every product named after its photo (helper-244)."""
    tables: list[Path] = []
    with os.scandir(root) as listing:
        folders = [e.path for e in listing if not e.name.startswith(".") and e.is_dir()]
    for folder in folders:
        with contextlib.suppress(OSError), os.scandir(folder) as listing:
            tables += [Path(e.path) for e in listing
                       if e.name.casefold() in CSV_NAMES and e.is_file()]
    return sorted(tables)


def tables_not_csv(root: Path) -> list[Path]:
    """Files at ``root`` named as the product table in another format (``produtos.xlsx``,
    ``products.ods``, ``produtos.txt``…), which are never read: only a CSV table is. Said by
    ``index`` when there is no CSV table: a shop's workbook beside its photos had its names
    and prices left out without a word, every product named after its photo."""
    stems = {Path(name).stem for name in CSV_NAMES}
    with contextlib.suppress(OSError), os.scandir(root) as listing:
        return sorted(Path(e.path) for e in listing
                      if Path(e.name.casefold()).stem in stems and e.name.casefold()
                      not in CSV_NAMES and e.is_file())
    return []


def column_key(text: str) -> str:
    """A column name without accents, case, spaces, hyphens or dots: how names compare."""
    return re.sub(r"[\s\-.]+", "_", fold(text).strip()).strip("_")


_CANONICAL = {column_key(alias): name for name, aliases in COLUMN_ALIASES.items()
              for alias in aliases}


_IN_REAIS = re.compile(r"_?(?:\(r\$\)|\(brl\)|\(reais\)|\(em_reais\)|r\$|brl|em_reais)$")
"""A price column's unit in its name, "Preço (R$)", "Valor R$", "price (BRL)": the price
field still (its prices were kept as an attribute, every product shown without one). No other
currency's: its prices would be shown as reais."""


_UTF8_ACCENT = re.compile(rb"\xc3[\x80-\xbf]|\xc2[\xa0-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|"
                         rb"[\xf0-\xf4][\x80-\xbf]{3}")
"""A Latin-1 letter or sign (``é``, ``º``), or a character of three or four bytes (``–``,
``€``, an emoji), as UTF-8 writes it: what Windows-1252 text hardly ever holds ("Ã©"). Not
any two bytes that UTF-8 would take for one: "É®" or "Ñ”" are Windows-1252 too."""


def decode(path: Path) -> str:
    """The file's text: UTF-16 when it starts with its byte-order mark (Excel's "Unicode
    text"), else UTF-8 (with or without a byte-order mark), else Windows-1252 (what Excel
    writes as plain 'CSV' on Windows) or Mac Roman (:func:`_single_byte_text`); UTF-8 with
    a byte that is not is an error naming its line."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise CatalogError(f"{path} is not valid UTF-16 text; save it as 'CSV UTF-8'."
                               ) from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        # mostly UTF-8 (its byte-order mark, or more of its accents than bad bytes) with a
        # stray byte: read as Windows-1252, every accent and, after a mark, every id changed
        wrong = data.decode("utf-8", "replace").count("\ufffd")
        if data.startswith(b"\xef\xbb\xbf") or len(_UTF8_ACCENT.findall(data)) >= wrong:
            line = data.count(b"\n", 0, exc.start) + 1
            raise CatalogError(f"{path} line {line}: byte {data[exc.start]:#04x} is not "
                               "UTF-8, while the rest of the file is; correct that character "
                               "or save the file as 'CSV UTF-8' again.") from None
    return _single_byte_text(data)


_APOSTROPHES, _DASHES = frozenset("’‘'"), frozenset("—–")
_OPENING = frozenset("‹“‘„‚«")
"""Signs that open a quotation: after a letter and not before one, Windows-1252's ‹ is Mac
Roman's ã ("Lã" read as "L‹")."""
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")
_COMMON = frozenset("áéíóúâêôãõçàüñÁÉÍÓÚÂÊÔÃÕÇÀÜÑ")
"""The accented letters of Portuguese and Spanish: on a tie of :func:`_fit`, the reading with
more of them (Mac Roman's "Óculos", Windows-1252's "îculos")."""


_ABBREVIATED = re.compile(r"(?<![^\W\d_])(?:[Ss]r|[Dd]r|[Pp]rof|[Ee]ng|[Aa]rq|[Ee]xm|[Ii]lm|"
                          r"[Mm]estr|[Dd]out)\.?$")
"""The Portuguese titles written with an ordinal sign after them ("Srª", "Drª", "Profª",
"Exmº"): there it is no trade mark (Mac Roman's "Sr™", which a Windows-1252 table of a
shop's "Srª Maria" was read as). Not in capitals: "CREME SR™" keeps its trade mark."""
_TITLE_CHARS = 6
"""The longest of :data:`_ABBREVIATED`'s titles ("Mestr."): the characters before a sign
that it reads (its look-behind reads the one before them in place)."""


def _fit(text: str) -> float:
    """How well ``text``'s characters outside ASCII sit where they are: a letter inside a
    word in the case of its neighbours (not "CafŽ", "RELîGIO", "SlimóFit", "BÏuf"; alone,
    "à", half: not "Ä49", " ñ "), a sign beside at most one letter (“, €, " – ") or an
    apostrophe between two ("don’t"), a dash between two ("black—white") half; not an opening
    sign after a letter ("L‹", Mac Roman's "Lã"), nor an ordinal sign after anything but a
    digit ("1ª", not "Casioª": Mac Roman's "Casio™"), a title ("Srª", :data:`_ABBREVIATED`)
    or an N for número ("Nº 18", "n.º 5"; Mac Roman's reading, "N∫ 18", fitted better: a
    shoe shop's table went Mac Roman)."""
    def cased(c: str) -> bool:
        return c.islower() or c.isupper()

    score = 0.0
    padded = f" {text} "
    for found in _NOT_ASCII.finditer(padded):  # (not every character: a long table)
        i, c = found.start(), found[0]
        a, b = padded[i - 1], padded[i + 1]
        if c in "ªº":  # (lower case letters to Python)
            score += a.isdigit() or c == "º" and (  # (and "Nº", "n.º": número)
                a in "Nn" or a == "." and padded[i - 2] in "Nn") or (
                # (a title's characters alone: the whole text before each sign was
                # searched, 2,000 rows of a Mac Roman "Casio™" read in 16 s)
                not cased(b) and _ABBREVIATED.search(padded, max(0, i - _TITLE_CHARS),
                                                     i) is not None)
        elif cased(c):
            if not (cased(a) or cased(b)):
                score += 0.5
            else:
                score += not (c.islower() and b.isupper() or c.islower() and a.isupper()
                              and b.isupper() or c.isupper() and (
                                  a.islower() or cased(a) and b.islower()))
        elif cased(a) and cased(b):
            score += 1 if c in _APOSTROPHES else 0.5 if c in _DASHES else 0
        else:
            score += not (c in _OPENING and cased(a))
    return score


def _single_byte_text(data: bytes) -> str:
    """A table that is not UTF-8, read as Windows-1252 or as Mac Roman (Excel for Mac's "CSV
    (Macintosh)"), whichever fits: Mac Roman where Windows-1252 has no character for a byte
    ("ç" is 0x8d) or its characters outside ASCII fit their places better so (:func:`_fit`),
    or as well and more of them are Portuguese or Spanish letters (else Windows-1252, the
    more common).
    It was read as Windows-1252, "Relógio Café" stored as "Rel—gio CafŽ", or refused;
    counting only accented small letters between ASCII letters took "Slim—Fit “Classic”" for
    Mac Roman ("SlimóFit ìClassicî") and "RELÓGIO", "Café" or "Coleção" for Windows-1252.
    Mac Roman has a character for every byte: no table is refused here."""
    mac = data.decode("mac_roman")
    try:
        windows = data.decode("cp1252")
    except UnicodeDecodeError:
        return mac
    def fit(text: str) -> tuple[float, int]:
        return _fit(text), sum(c in _COMMON for c in _NOT_ASCII.findall(text))

    return mac if fit(mac) > fit(windows) else windows


SNIFF_CHARS = 16_000
"""The most characters of whole lines (the header at least) csv.Sniffer reads."""


def delimiter(text: str) -> str:
    """The separator of a table: the one of semicolon, comma and tab that splits its first
    lines into the same number of fields (csv.Sniffer); failing that, the most frequent in the
    header outside quotes, a semicolon on a tie (Excel in Brazil does not quote a comma in a
    semicolon file), a comma when there is none. The sniffer's guess is taken only when the
    header holds it: it reads quoted text first, and a semicolon table with a description
    such as ``"Couro, ""premium"", alça"`` was taken for a comma table (one column, "no image
    column"). Nor when the header holds another more often and every row has as many
    fields by that one: the sniffer prefers a comma, and an Excel table of Brazil, a decimal
    comma in every row's price and a column named ``Preço (R$, à vista)``, was taken for a
    comma table ("no image column"). A header holding one of them is read by it, unsniffed;
    the sniffer reads whole lines up to SNIFF_CHARS: its time grows with the square of a
    line's length, and a table of long quoted descriptions (HTML) held index for minutes."""
    outside = re.sub(r'"[^"]*"', "", text.split("\n", 1)[0])
    counts = {sep: outside.count(sep) for sep in (";", ",", "\t")}
    if sum(map(bool, counts.values())) == 1:
        return max(counts, key=lambda sep: counts[sep])
    lines = text.splitlines()[:21]
    taken, size = 1, len(lines[0]) if lines else 0
    while taken < min(len(lines), 20) and size + len(lines[taken]) < SNIFF_CHARS:
        size += len(lines[taken]) + 1
        taken += 1
    sample = "\n".join(lines[:taken])
    try:  # (not of the header alone, a row too long to read with it: the header decides)
        sniffed = csv.Sniffer().sniff(sample, delimiters=";,\t").delimiter if (
            taken > 1 or len(lines) < 2) else None
    except csv.Error:
        sniffed = None
    if sniffed is not None and (counts.get(sniffed) or not any(counts.values())):
        rival = max(counts, key=lambda sep: counts[sep])
        if counts[rival] > counts.get(sniffed, 0) and _splits_alike(
                sample, rival, len(lines) > taken):
            return rival
        return sniffed
    best = max(counts, key=lambda sep: counts[sep])  # the first of a tie: ';'
    return best if counts[best] else ","


def _splits_alike(sample: str, sep: str, cut: bool) -> bool:
    """Whether ``sep`` splits every row of ``sample`` into as many fields as the header,
    empty ones after the last aside (the last row aside when the sample ``cut`` it)."""
    try:
        records = [r for r in csv.reader(io.StringIO(sample), delimiter=sep)
                   if any(c.strip() for c in r)]
    except csv.Error:
        return False
    records = records[:-1] if cut else records

    def width(record: list[str]) -> int:
        while record and not record[-1].strip():
            record = record[:-1]
        return len(record)

    return len(records) > 1 and all(width(r) <= len(records[0]) and len(r) >= width(
        records[0]) for r in records[1:])


def column_names(header: list[str]) -> list[str]:
    """The field each column holds: a column named exactly as a field (``image``) takes it
    first, then aliases (``foto``, ``Preço (R$)``) take the fields left, in order; any other
    column, or an alias whose field is taken, keeps its own name as an attribute (numbered if
    repeated)."""
    keys = [column_key(c) for c in header]
    names: list[str | None] = [k if k in COLUMN_ALIASES else None for k in keys]
    for i, key in enumerate(keys):
        field = _CANONICAL.get(key) or (
            "price" if _CANONICAL.get(_IN_REAIS.sub("", key)) == "price" else None)
        if names[i] is None and field and field not in names:
            names[i] = field
    out: list[str] = []
    for column, name in zip(header, names, strict=True):
        base = name if name and name not in out else (column.strip() or "column")
        name, n = base, 2
        while name in out:
            name, n = f"{base} ({n})", n + 1
        out.append(name)
    return out


def read_rows(path: Path) -> list[Row]:
    """The table's non-blank rows with canonical field names; an error names the file and
    the line."""
    text = decode(path)
    blank = _BLANK_LINES.match(text).end()  # above the header: skipped
    # Excel's first line naming the separator ("sep=;"): that separator, the line blank (it
    # was the header: "no image column; its columns are 'sep=', ''")
    named = _SEP_LINE.match(text, blank)
    if named and not named["rest"].strip(" \t" + named["sep"]):
        text = text[:blank] + text[named.end():]
        blank = _BLANK_LINES.match(text).end()
    else:
        named = None
    # a row after the table's end: read as a row of its own unless a quote left open swallowed
    # it, with every row below that quote
    end = "" if text.endswith(("\n", "\r")) or not text else "\n"
    sep = named["sep"] if named else delimiter(text[blank:])
    reader = csv.reader(io.StringIO(f"{text}{end}{_END}\n", newline=""), delimiter=sep)
    try:
        header: list[str] = []
        while not any(c.strip(" \t;," + sep) for c in header):  # (the end row is not blank)
            start = reader.line_num + 1
            header = next(reader)
        if header != [_END] and _END in header[-1]:
            raise _unclosed_quote(path, start)
        if header == [_END]:
            raise CatalogError(f"{path} is empty: give it a header row naming its columns "
                               "(at least 'image'), or delete it.")
        names = column_names(header)
        if "image" not in names:
            shown = ", ".join(repr(c[:40]) + ("…" if len(c) > 40 else "")
                              for c in header[:12]) + (" …" if len(header) > 12 else "")
            raise CatalogError(f"{path} has no image column (name one 'image' or 'imagem'); "
                               f"its columns are {shown}.")
        rows = []
        line = reader.line_num + 1
        for values in reader:
            if values == [_END]:
                break
            if values and _END in values[-1] or any(
                    _holds_a_row(v, sep, len(names), names.index("image")) for v in values):
                raise _unclosed_quote(path, line)
            if any(v.strip() for v in values[len(names):]):
                raise CatalogError(f"{path} line {line}: more fields than the header has "
                                   "columns (quote a value that holds the separator).")
            # (a cell's line breaks as "\n": a table saved on Windows kept "\r\n" in
            # each description, as the API and the pages then gave it)
            cells = {n: _LINE_END.sub("\n", v).strip()
                     for n, v in zip(names, values, strict=False)}
            if any(cells.values()):
                fields = {n: cells.get(n, "") for n in COLUMN_ALIASES}
                extra = {n: v for n, v in cells.items() if n not in COLUMN_ALIASES and n and v}
                rows.append(Row(line, fields, extra))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise CatalogError(f"{path} is not valid CSV ({exc}).") from None
    return rows


_LINE_END = re.compile(r"\r\n?")
"""A Windows (CR LF) or old Mac (CR) line end inside a quoted cell."""


def no_rows(path: Path) -> CatalogError:
    """A product table of a header and no row, where a catalogue needs products: an export
    of an emptied sheet made every photo a product named by its file, dropping every name
    and price the store had (helper-179); in an empty split folder it is as missing."""
    return CatalogError(f"{path} lists no products (a header row and nothing under it); give "
                        "it a row per product, or delete it.")


def _holds_a_row(value: str, sep: str, width: int, image_at: int) -> bool:
    """True when a line inside a value over several lines reads as a row of the table (as
    many fields, a photo in the image column): a quote left open, closed only by a later
    quote (a doubled one, say), took in the rows between."""
    if "\n" not in value and "\r" not in value:
        return False
    for inner in value.splitlines()[1:]:
        fields = next(csv.reader([inner], delimiter=sep), [])
        if len(fields) >= width and is_image_path(Path(fields[image_at].strip())):
            return True
    return False


def _unclosed_quote(path: Path, line: int) -> CatalogError:
    return CatalogError(f"{path} line {line}: a quote (\") opens a value that takes in the "
                        "rows below it (it is closed only by a later quote, or never); close "
                        "it where the value ends, or remove it.")


_BLANK_LINES = re.compile(r"(?:[ \t;,]*(?:\r\n|\r|\n))*")
"""Rows of blanks or bare separators, which a spreadsheet may leave above the header."""
_SEP_LINE = re.compile(r'"?sep=(?P<sep>[^\r\n"])"?(?P<rest>[^\r\n]*)(?=\r\n|\r|\n|$)',
                       re.IGNORECASE)
"""Excel's line naming the table's separator (``sep=;``, any one character), above the
header; a spreadsheet that kept it as a cell may have quoted it and added empty cells."""
_END = "\x00vitrine: end of the table\x00"
"""A row put after the table: the reader reaches it only if every quote was closed."""


def path_key(rel: str) -> str:
    """How a table's photo path is matched to a file's relative path: without case, and with
    accents in one Unicode form (a Mac writes "é" in file names as "e" plus a combining
    accent; a table typed elsewhere as one character)."""
    return unicodedata.normalize("NFC", rel).casefold()


def image_path(root: Path, text: str, same_but_case) -> Path:
    """The photo a row names, relative to ``root``: backslashes read as folder separators, and
    the photo found through ``same_but_case`` (:func:`path_key` of the relative path → the
    scanned files it matches): the file of that exact name, or the one whose name differs only
    in case or Unicode form. Raises ``ValueError`` with the reason when the row can never name
    a usable photo; a file that is simply missing is left for index to report (and to remove
    its product)."""
    if CONTROL.search(text):
        raise ValueError(f"image {text!r} holds a control character (such as a line break); "
                         "give photos names without them")
    if _URL.match(text):
        raise ValueError(f"image {text!r} is an address on the web; Vitrine reads photos from "
                         "the catalogue folder: save them there and give their paths")
    if _DRIVE.match(text):
        raise ValueError(f"image '{text}' is a path on a Windows drive; give the path inside "
                         "the catalogue folder (such as bolsas\\foto.jpg)")
    rel = text.replace("\\", "/")
    full = Path(os.path.normpath(root / rel))
    if not full.is_relative_to(root) or full == root:
        raise ValueError(f"image {text!r} is outside the catalogue folder")
    # the scanned file it names, as the scan spells it (a Mac's disk also finds a file by
    # another case or Unicode form of its name: the row must still name the scanned path)
    found = same_but_case(path_key(full.relative_to(root).as_posix()), [])
    if full not in found and len(found) > 1:
        raise ValueError(f"image {text!r} matches files whose names differ only in case or "
                         "accents' encoding ("
                         + ", ".join(f.relative_to(root).as_posix() for f in found) + ")")
    if full not in found and found:
        full = found[0]
    try:
        folder = full.is_dir()
    except OSError as exc:  # (a name too long: it ended the whole table's check)
        raise ValueError(f"image {text[:80]!r}{'…' if len(text) > 80 else ''} cannot be a "
                         f"file here ({exc.strerror or exc})") from None
    if folder:
        raise ValueError(f"image {text!r} is a folder, not a photo")
    if not is_image_path(full):
        kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise ValueError(f"image {text!r} is not a photo file ({kinds})")
    return full


def is_no_price(text: str) -> bool:
    return text.strip().casefold() in NO_PRICE


def report(path: Path, problems: list[str]) -> CatalogError:
    """One error for every problem found in the table (the first few named)."""
    shown = "; ".join(problems[:MAX_REPORTED])
    more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
    if len(problems) == 1:
        return CatalogError(f"{path} {shown}.")
    return CatalogError(f"{path} has {len(problems)} problems: {shown}{more}.")
