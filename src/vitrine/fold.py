"""Text compared without case or accents, the same everywhere: shoppers type ``relogio`` or
``ACAI`` for "Relógio" and "Açaí"; shops write ``Preço`` or ``PRECO`` for a price column."""

from __future__ import annotations

import unicodedata


def _strip_marks(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def fold(text: str) -> str:
    """``text`` without accents (NFKD, combining marks dropped) and case (casefold): "AÇAÍ"
    and "açaí" both give "acai", "Straße" gives "strasse"."""
    return _strip_marks(_strip_marks(text).casefold())  # casefold can bring marks back



def searchable(text: str) -> str:
    """What name search compares: :func:`fold`, line breaks as spaces (a name written over two
    lines is found by a query of one)."""
    return " ".join(fold(text).splitlines()) if "\n" in text or "\r" in text else fold(text)
