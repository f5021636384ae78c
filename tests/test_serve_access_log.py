"""`vitrine serve`'s access log: a line a request, with the time it took (uvicorn's line had
none, so a slow request could not be told from the others)."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request

import pytest

LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3})[^"\n]*? '
                  r'in (?P<ms>\d+\.\d) ms$')


def test_each_request_is_logged_once_with_its_method_path_status_and_duration(capsys):
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from vitrine.server import running

    app = FastAPI()

    @app.get("/slow")
    async def slow() -> PlainTextResponse:
        await asyncio.sleep(0.3)
        return PlainTextResponse("done")

    @app.get("/quick")
    async def quick() -> PlainTextResponse:
        return PlainTextResponse("done")

    with running(app, access_log=True) as base:
        assert urllib.request.urlopen(f"{base}/slow?x=1", timeout=30).read() == b"done"
        assert urllib.request.urlopen(f"{base}/quick", timeout=30).read() == b"done"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nowhere", timeout=30)
        assert missing.value.code == 404
    lines = [line for line in capsys.readouterr().out.splitlines() if "HTTP/1.1" in line]
    found = [LINE.search(line) for line in lines]
    assert len(lines) == 3 and all(found), lines  # (one line each, none twice)
    logged = [(m["method"], m["path"], m["status"]) for m in found]
    assert logged == [("GET", "/slow?x=1", "200"), ("GET", "/quick", "200"),
                      ("GET", "/nowhere", "404")]
    assert float(found[0]["ms"]) >= 300  # (the request's own time: its 0.3 s sleep in it)
