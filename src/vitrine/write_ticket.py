"""A write request's ticket: whether its change may still land, and whether it did.

The server answers a request that it cut off as it stops (uvicorn cancels it once its graceful
shutdown time is over: ``vitrine.web.guards.Stopping``), but the endpoint's worker thread
cannot be cancelled: a write answered "503, try again" went on to be saved (a client that did
not retry believed the product missing; a DELETE retried was a 404). So each write request
carries a ticket (in :data:`TICKET`, which Starlette copies into the worker thread) that the
store's change and the server's answer settle under one lock: the write either sees the
ticket cancelled and changes nothing (:class:`WriteCancelled`), or it lands and says so
before the server can answer, which then tells the client its change was saved. Outside the
server (the CLI, tests calling the service) there is no ticket, and writes go on as ever.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from vitrine.errors import StoreError


class WriteCancelled(StoreError):
    """A write whose request the server answered already (stopping): nothing was changed."""

    def __init__(self) -> None:
        super().__init__("the server stopped before this change was made; nothing changed.")


class WriteTicket:
    """One write request's say: ``cancelled`` (the server answered it: the change must not be
    made) and ``committed`` (the change was made, to ``product_id`` as the store spells it),
    set under one lock so that a change and the answer cannot cross."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = False
        self.committed = False
        self.product_id: str | None = None

    @contextlib.contextmanager
    def committing(self) -> Iterator[Callable[[str], None]]:
        """Hold the ticket while the store is changed: raises :class:`WriteCancelled` when
        the request was answered already; else the body makes the change and calls what it
        is given with the product's id as soon as the change is in the store (before that,
        and where the body fails, nothing changed)."""
        with self._lock:
            if self.cancelled:
                raise WriteCancelled()
            yield self._commit

    def _commit(self, product_id: str) -> None:
        self.committed, self.product_id = True, product_id

    def try_cancel(self) -> bool | None:
        """Cancel the ticket unless its change is being made right now (None: try again in
        a moment); returns whether the change was made."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            self.cancelled = True
            return self.committed
        finally:
            self._lock.release()


TICKET: ContextVar[WriteTicket | None] = ContextVar("vitrine_write_ticket", default=None)
"""The ticket of the write request being served, None outside one (the CLI, tests)."""


def write_cancelled() -> bool:
    """Whether the write being served was answered already (a quick look before a write's
    work, such as waiting for the store's writer lock; :func:`committing` is the check)."""
    ticket = TICKET.get()
    return ticket is not None and ticket.cancelled


@contextlib.contextmanager
def committing() -> Iterator[Callable[[str], None]]:
    """:meth:`WriteTicket.committing` of the request being served; outside a request, a
    change that nothing can cancel."""
    ticket = TICKET.get()
    if ticket is None:
        yield lambda product_id: None
        return
    with ticket.committing() as done:
        yield done
