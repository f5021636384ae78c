"""Name search in the embedded store: the text ``q`` looks in, folded (case and accents) once
when a product is written, so that a search is one scan in C."""

from __future__ import annotations

import sqlite3

from vitrine.fold import searchable


def searchable_sql(text: str | None) -> str | None:
    """:func:`vitrine.fold.searchable` as an SQLite function (NULL stays NULL)."""
    return None if text is None else searchable(str(text))


def search_key(name: str, product_id: str) -> str:
    """What name search (``q``) looks in: name and id folded (case and accents), kept in the
    ``search_key`` column so that a search is one scan in C, not a Python call per row."""
    return searchable(name) + "\n" + searchable(product_id)


def listing_order(category: str, name: str, product_id: str) -> tuple[str, str, str, str]:
    """A product's place in a catalogue page's order, as the embedded store's ``ORDER BY
    category, search_key, name, product_id`` (``LISTING_ORDER``; Python compares text by
    code point, as SQLite its UTF-8 bytes): what the Milvus store sorts by, and where a page
    after a product (a cursor) starts in either store."""
    return category, search_key(name, product_id), name, product_id


SEARCH_KEY_SQL = "vitrine_searchable(name) || char(10) || vitrine_searchable(product_id)"
""":func:`search_key` in SQL: fills the column in a store made before it, and stands in for
it when such a store can only be read."""


def add_search_key(db: sqlite3.Connection) -> bool:
    """Give a store made before the ``search_key`` column that column, filled; False when
    the store cannot be written here (name search then folds each row as it reads)."""
    return _fold(db, "ALTER TABLE products ADD COLUMN search_key TEXT",
                 f"UPDATE products SET search_key = {SEARCH_KEY_SQL}")


FOLDED_AT = "search_keys_at"
"""The meta key of the write generation whose rows :func:`refold_search_keys` last folded."""


def refold_search_keys(db: sqlite3.Connection) -> bool:
    """Fold again what an older Vitrine wrote into a store that has the column: it knows
    nothing of it, so the products it added had no key (never found by name) and those it
    renamed kept their old name's. Such a write is one that did not record its rows (meta
    ``tracked`` behind ``generation``, as :class:`EmbeddedStore` reads it); done once per
    such generation. False when nothing was to be done or the store cannot be written."""
    if not refold_due(db):
        return False
    waits = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout = 0")  # a writer at work: the next opening does it, or
    try:  # that writer's own transaction (:func:`refold_in`)
        return _fold(db, REFOLD)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(waits)}")


def refold_due(db: sqlite3.Connection) -> bool:
    """Whether an older Vitrine wrote since the keys were last folded."""
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN "
                           "('generation', 'tracked', ?)", (FOLDED_AT,)))
    generation = meta.get("generation")
    return generation is not None and generation not in (meta.get("tracked"),
                                                         meta.get(FOLDED_AT))


REFOLD = (f"UPDATE products SET search_key = {SEARCH_KEY_SQL} "
          f"WHERE search_key IS NOT {SEARCH_KEY_SQL}")


def refold_in(db: sqlite3.Connection) -> None:
    """:func:`refold_search_keys`' work, in the write transaction that found an older
    Vitrine's write (a store opened before it wrote: opening did not see it)."""
    db.execute(REFOLD)
    _mark_folded(db)


def _mark_folded(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR REPLACE INTO meta(key, value) SELECT ?, value FROM meta "
               "WHERE key = 'generation'", (FOLDED_AT,))


def _fold(db: sqlite3.Connection, *statements: str) -> bool:
    """Run ``statements`` in one write transaction and record the generation folded; False
    when the store cannot be written here (read-only, a writer holds it, a full disk)."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    try:
        for statement in statements:
            db.execute(statement)
        _mark_folded(db)
        db.execute("COMMIT")
        return True
    except sqlite3.OperationalError:
        if db.in_transaction:  # (SQLite rolled back already on a full disk)
            db.execute("ROLLBACK")
        return False
