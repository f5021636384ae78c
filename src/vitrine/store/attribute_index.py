"""The embedded store's index of attribute values: the ``product_attributes`` table, one row
for each product and text attribute (its row id, the key, the value, and the product's
price), indexed on (key, value, price), so that an attribute filter reads its own products'
ids, within a price range as one range of that index, instead of parsing every product's
JSON (``json_extract``: 53-75 ms at 100,000 products, 0.4-0.6 s at 1,000,000;
``benchmarks/filter_search.py``).

It is kept by triggers on the products table, in the transaction of every write: any
write, this Vitrine's or an older one's, through any statement, changes it with the row.
It is made, filled from the rows and given its triggers in one transaction when a store that
lacks it is opened where it can be written (as ``sqlite_db.INDEXES`` are: not waiting for a
writer at work, else at the next opening); where it is not there whole, a filter reads the
JSON as before (:meth:`vitrine.store.filters.ProductFilter.sql`): the same products."""

from __future__ import annotations

import contextlib
import sqlite3

TABLE = "product_attributes"
VALUE_INDEX = "product_attributes_value"
TRIGGERS = ("product_attributes_insert", "product_attributes_update",
            "product_attributes_delete")
OBJECTS = (TABLE, VALUE_INDEX, *TRIGGERS)
"""The schema's objects the index is; all there, or it is not used (a products table made
again by hand drops the triggers: its rows would no longer be followed)."""


def _rows(row: str) -> str:
    """The (id, key, value, price) rows of the text attributes of the products row ``row``
    (a trigger's ``new``, or the whole ``products`` table): the same rule as the JSON
    filter (an object's top-level keys, values of JSON type text; no row for JSON that is
    not an object, nor for invalid JSON, which made a filter fail, not a write)."""
    attrs = f"{row}.attributes"
    table = "products, " if row == "products" else ""
    return (f"SELECT {row}.id, j.key, j.value, {row}.price FROM {table}json_each("
            f"CASE WHEN NOT json_valid({attrs}) THEN '{{}}' WHEN json_type({attrs}) = "
            f"'object' THEN {attrs} ELSE '{{}}' END) AS j WHERE j.type = 'text'")


# (each product's keys are unique in its JSON object, as json.dumps writes it; a key written
# twice keeps its first text value: INSERT OR IGNORE)
_FILL = f"INSERT OR IGNORE INTO {TABLE}(id, key, value, price) "
SCHEMA = (
    f"CREATE TABLE {TABLE} (id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "price REAL, PRIMARY KEY (id, key)) WITHOUT ROWID",
    _FILL + _rows("products"),
    f"CREATE INDEX {VALUE_INDEX} ON {TABLE}(key, value, price)",
    f"CREATE TRIGGER {TRIGGERS[0]} AFTER INSERT ON products BEGIN "
    f"DELETE FROM {TABLE} WHERE id = new.id; {_FILL}{_rows('new')}; END",
    f"CREATE TRIGGER {TRIGGERS[1]} AFTER UPDATE OF id, attributes, price ON products "
    "WHEN old.id IS NOT new.id OR old.attributes IS NOT new.attributes "
    "OR old.price IS NOT new.price BEGIN "
    f"DELETE FROM {TABLE} WHERE id IN (old.id, new.id); {_FILL}{_rows('new')}; END",
    f"CREATE TRIGGER {TRIGGERS[2]} AFTER DELETE ON products BEGIN "
    f"DELETE FROM {TABLE} WHERE id = old.id; END")
"""The table filled from the rows, then its index (made on the filled table: faster), then
the triggers that keep it (the insert's DELETE: rows of a product ``INSERT OR REPLACE``
removed without its trigger, whose row id is given again)."""


MADE = dict(zip(OBJECTS, (SCHEMA[0], *SCHEMA[2:]), strict=True))
"""Each object's statement, as SQLite keeps it in its schema."""


def attribute_index_ready(db: sqlite3.Connection) -> bool:
    """Whether the store's attribute index is there whole (its table, index and triggers),
    each as this Vitrine makes it (one of another version's is made again)."""
    marks = ", ".join("?" * len(OBJECTS))
    return dict(db.execute(f"SELECT name, sql FROM sqlite_master WHERE name IN ({marks})",
                           OBJECTS).fetchall()) == MADE


def make_attribute_index(db: sqlite3.Connection) -> None:
    """Make and fill the attribute index where the store lacks it (or part of it), in one
    transaction, without waiting for a writer at work (busy timeout 0: the next opening
    makes it); nothing is made where it cannot be written (read-only, a full disk)."""
    if attribute_index_ready(db):
        return
    waits = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for trigger in TRIGGERS:
                db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            db.execute(f"DROP TABLE IF EXISTS {TABLE}")  # (and its index)
            for statement in SCHEMA:  # (executescript would commit first)
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError:
        pass  # (busy, read-only, full: the JSON is read as before, made next time)
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute(f"PRAGMA busy_timeout = {int(waits)}")
