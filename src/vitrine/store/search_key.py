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


SEARCH_KEY_SQL = "vitrine_searchable(name) || char(10) || vitrine_searchable(product_id)"
""":func:`search_key` in SQL: fills the column in a store made before it, and stands in for
it when such a store can only be read."""


def add_search_key(db: sqlite3.Connection) -> bool:
    """Give a store made before the ``search_key`` column that column, filled; False when
    the store cannot be written here (name search then folds each row as it reads)."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    try:
        db.execute("ALTER TABLE products ADD COLUMN search_key TEXT")
        db.execute(f"UPDATE products SET search_key = {SEARCH_KEY_SQL}")
        db.execute("COMMIT")
        return True
    except sqlite3.OperationalError:
        db.execute("ROLLBACK")
        return False
