"""Settings of the web server checked as browsers and proxies see them: an origin as browsers
send it in ``Origin`` (``VITRINE_CORS_ORIGINS``), the path prefix a reverse proxy serves
Vitrine under (``VITRINE_ROOT_PATH``)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def _browser_idna(host: str) -> str:
    """``host`` in the ASCII form browsers send in ``Origin`` (the URL Standard's UTS #46,
    non-transitional: ``straße.de`` is ``xn--strae-oqa.de``; Python's own "idna" codec is
    IDNA 2003 and made it ``strasse.de``, an origin no browser sends). ASCII labels stay as
    they are (browsers allow ``_`` there)."""
    import idna

    # (UTS 46 maps the host whole: its ideographic full stops are dots; its ToASCII is the
    # mapping and Punycode, not IDNA 2008's code point table, which refuses ☃ or ❤ that
    # browsers send as xn--n3h: helper-251)
    mapped = host if host.isascii() else idna.uts46_remap(host, std3_rules=False,
                                                          transitional=False)
    labels = [label.lower() if label.isascii() else
              "xn--" + label.encode("punycode").decode("ascii") for label in mapped.split(".")]
    if any(not 0 < len(label) <= 63 for label in labels[:-1] or labels) or len(labels[-1]) > 63:
        raise ValueError("a label of the host is empty or longer than 63 characters")
    return ".".join(labels)


def _origin(text: str) -> str:
    """A browser origin as browsers send it: ``scheme://host[:port]``, lower case, the host
    in IDNA form (``lojá.com.br`` → ``xn--loj-gla.com.br``), no default port, no slash at the
    end (``https://Loja.com:443/`` → ``https://loja.com``; ``*`` stays). What could never
    match an Origin header (a path, a user name, a wildcard in the host, a bad port) is
    refused."""
    if text == "*":
        return text
    parts = urlsplit(text.rstrip("/"))
    problem = None
    try:
        port = parts.port
    except ValueError:
        port, problem = None, "its port is not a number from 0 to 65535"
    host = parts.hostname or ""
    if not host.isascii():  # (as written: str.lower() makes a word-final Σ ς, UTS 46 σ)
        host = parts.netloc.rpartition("@")[2].partition(":")[0]
    if parts.scheme not in ("http", "https") or not host or parts.path or parts.query \
            or parts.fragment:
        problem = "write scheme://host[:port], such as https://loja.com.br, without a path"
    elif parts.username is not None or parts.password is not None:
        problem = "an origin has no user name or password"
    elif "*" in host:
        problem = "list each origin; a wildcard in the host is not supported"
    if problem is None and ":" not in host:  # an IPv6 address stays as it is
        try:
            host = _browser_idna(host)
        except (UnicodeError, ValueError):  # (idna.IDNAError is a UnicodeError)
            problem = "its host is not a valid domain name"
    if problem:
        raise ValueError(f"{text!r} is not an origin; {problem}")
    if ":" in host:
        host = f"[{host}]"
    shown_port = "" if port is None or port == DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{shown_port}"


ROOT_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
"""A segment of a path prefix: letters, digits and ``._~-`` (it starts every link the pages
write, and /docs writes it into a script: a quote broke it; ``%``, ``<`` and the like
refused)."""


def root_path_problem(value: str) -> str | None:
    """What is wrong with ``value`` as the path prefix a reverse proxy serves Vitrine under
    (``/vitrine``), else None (empty is none): segments after a slash each (``//shop`` in a
    link leaves for another site), none at the end (the pages add their own), of letters,
    digits and ``._~-`` only, none of them ``.`` or ``..`` (``/..`` made every link leave the
    prefix: helper-229)."""
    if not value:
        return None
    segments = value.split("/")
    if segments[0] or not all(ROOT_PATH_SEGMENT.fullmatch(s) and s not in (".", "..")
                              for s in segments[1:]):
        return ("write a path such as /vitrine or /shop/vitrine: a '/' before each part, "
                "none at the end, each part of letters, digits and '.', '_', '~', '-' "
                "(not '.' or '..')")
    return None
