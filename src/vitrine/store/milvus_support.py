"""What the Milvus store needs around pymilvus and Milvus Lite: its packages checked
(:func:`require_milvus`), filter literals Milvus's parser reads back exactly, a query
iterator whose cursor is escaped, Milvus Lite's log records kept off the terminal, one
sentence for a store that cannot be opened, and the Milvus Lite files this process holds
open (the last store to close one stops its server)."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vitrine.errors import StoreError, extra_hint

_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def quote(value: str | list[str]) -> str:
    """A filter literal: a double-quoted string (or a list of them). Quotes, backslashes,
    line breaks and tabs are escaped (a raw line break ends the literal); every other
    character is written as it is: Milvus's parser refuses the ``\\u``, ``\\x``, ``\\b`` and
    ``\\f`` escapes, so a category holding U+0001 could not be filtered on with JSON's."""
    if isinstance(value, list):
        return "[" + ", ".join(quote(v) for v in value) + "]"
    return '"' + value.translate(_ESCAPES) + '"'


def too_large(exc: BaseException) -> bool:
    """Whether a request failed for the size of a message (gRPC's limit, 256 MB on Milvus
    Lite and a Milvus server by default: "Sent message larger than max")."""
    return "larger than max" in str(exc)


def escaped_cursor(iterator) -> None:
    """pymilvus's query iterator pages with ``product_id > "<last id>"`` written without
    escapes, so an id holding a quote or a backslash breaks the next page's filter (or sends
    Milvus Lite's parser into a loop). Give this iterator a cursor that escapes it."""
    name = "_QueryIterator__setup_next_expr"
    if not hasattr(iterator, name) or not hasattr(iterator, "_next_id"):
        return

    def setup_next_expr() -> str:
        expr, last = iterator._expr, iterator._next_id
        if last is None:
            return expr
        op = ">=" if iterator._has_element_cursor() else ">"
        bound = quote(last) if iterator._pk_str else last
        cursor = f"{iterator._pk_field_name} {op} {bound}"
        return f"{cursor} and ({expr})" if expr else cursor

    setattr(iterator, name, setup_next_expr)


def _without_timestamp_notice(record: logging.LogRecord) -> bool:
    """Milvus Lite keeps no server timestamp, so every paged read warned on the terminal that
    it uses the client's clock, which is right for a file one process holds (installed for
    Milvus Lite only: from a server, the notice is news)."""
    return "mvccTs" not in record.getMessage()


def _said_by_the_client(record: logging.LogRecord) -> bool:
    """Milvus Lite's server thread logs every request it fails with its traceback (on the
    terminal when logging is not set up: 40 lines of pyarrow before the command's one
    `error:` sentence on a damaged file); the failure goes back to the client, whose error
    Vitrine says in that sentence, so the record is kept at DEBUG level, for whoever sets
    logging up to see. A write it can no longer schedule as the interpreter exits (a Ctrl+C
    during `index`'s final flush: "cannot schedule new futures after shutdown") is dropped:
    the command has said "interrupted." already, and what was committed is kept."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, RuntimeError) and "after shutdown" in str(error):
        return False
    if error is not None and record.levelno > logging.DEBUG:
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        # (the logger let it through at its own level: a handler of logging set up for
        # warnings would still show it)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
    return True


def _not_raised_too(record: logging.LogRecord) -> bool:
    """pymilvus logs every failed call with its traceback (its own handler, on the terminal)
    and raises it too: Vitrine says it in one sentence, so the record goes."""
    return record.funcName != "_log_rpc_error"


def quiet_client_logs() -> None:
    logger = logging.getLogger("pymilvus.decorators")
    if _not_raised_too not in logger.filters:
        logger.addFilter(_not_raised_too)


def quiet_lite_logs() -> None:
    for name in ("query_iterator", "search_iterator"):
        logger = logging.getLogger(f"pymilvus.client.iterator.{name}")
        if _without_timestamp_notice not in logger.filters:
            logger.addFilter(_without_timestamp_notice)
    servicer = logging.getLogger("milvus_lite.adapter.grpc.servicer")
    if _said_by_the_client not in servicer.filters:
        servicer.addFilter(_said_by_the_client)


@contextmanager
def lite_open_failures(uri: str) -> Iterator[list[BaseException]]:
    """While pymilvus opens a Milvus Lite file, catch why it fails: Milvus Lite logs the
    error with its traceback (on the terminal when logging is not set up) and pymilvus then
    raises a bare "Open local milvus failed". The list yielded receives the errors logged
    for this file (another process holding its lock, a path that cannot be made), so the
    caller can say what happened in one sentence; any other record is logged as before."""
    failures: list[BaseException] = []
    path = os.path.abspath(uri)

    def keep(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and path in (record.args or ()):
            failures.append(error)
            return False
        return True

    logger = logging.getLogger("milvus_lite.server_manager")
    logger.addFilter(keep)
    try:
        yield failures
    finally:
        logger.removeFilter(keep)


def _open_failure(location: str, uri: str, exc: Exception, failures: list[BaseException]
                  ) -> str:
    """One sentence for a store that cannot be opened, from what Milvus Lite logged."""
    cause = failures[0] if failures else None
    if type(cause).__name__ == "DataDirLockedError":
        return (f"the Milvus Lite file {uri} is open in another process (a running 'vitrine "
                "serve' or 'vitrine index'?); Milvus Lite lets one process open it at a time: "
                "stop that process, or use a Milvus server (milvus://HOST:PORT) for several "
                "processes.")
    if isinstance(cause, FileExistsError) and os.path.isfile(uri):
        return f"{uri} is a file, not a Milvus Lite store; choose another path for the store."
    if isinstance(cause, OSError):
        return f"cannot open the Milvus store {location} ({cause.strerror or cause})."
    if cause is not None:  # what Milvus Lite logged, which pymilvus's own error leaves out
        return f"cannot open the Milvus store {location} ({type(cause).__name__}: {cause})."
    return f"cannot open the Milvus store {location} ({exc})."


_LITE_OPEN: dict[str, int] = {}
"""How many stores of this process have each Milvus Lite file open (its server is one per
file and process): the last to close it stops that server, letting other processes open the
file (it stayed held until this process ended)."""
_LITE_LOCK = threading.Lock()


def _lite_release(path: str) -> None:
    """One store of this process closes the Milvus Lite file ``path``; the last stops its
    server."""
    with _LITE_LOCK:
        _LITE_OPEN[path] -= 1
        if _LITE_OPEN[path]:
            return
        del _LITE_OPEN[path]
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # (an older Milvus Lite: its server process ends with this one)
            return
        server_manager_instance.release_server(path)


def require_milvus(lite: bool) -> None:
    """A StoreError naming Vitrine's milvus extra when its packages are missing: pymilvus,
    and for a Milvus Lite file (``lite``) milvus-lite, which pymilvus 3 leaves out (its
    error's repr named pymilvus's own extra, and a folder was made)."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        raise StoreError("Milvus stores need Vitrine's milvus extra "
                         f"({extra_hint('milvus')}).") from None
    if lite and importlib.util.find_spec("milvus_lite") is None:
        raise StoreError("Milvus Lite stores need Vitrine's milvus extra, which brings "
                         f"milvus-lite ({extra_hint('milvus')}).")
