"""A photo still being sent when `vitrine serve` stops (SIGTERM, a deploy, while a slow
client downloads it): uvicorn cancels it once the graceful time is over, and logged
"Exception in ASGI application" with the CancelledError's 80-line traceback, a bug's signs
for a server that was told to stop."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

from fastapi.testclient import TestClient

CLI = [sys.executable, "-m", "vitrine.cli"]
KEY = "a-test-key-long-enough-0123"


def _large_png(side: int = 2600) -> bytes:
    """A PNG of noise, about 20 MB: more than the socket buffers hold."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def test_serve_stopped_while_a_photo_is_sent_logs_no_traceback(settings, small_store,
                                                               embedder, weights_path,
                                                               tmp_path):
    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    photo = _large_png()
    with TestClient(create_app(settings.model_copy(update={
            "api_key": KEY, "max_upload_bytes": 64_000_000}), store,
            embedder=embedder)) as client:
        added = client.post("/api/products", data={"product_id": "big", "name": "Big"},
                            files={"image": ("big.png", photo, "image/png")},
                            headers={"Authorization": f"Bearer {KEY}"})
        assert added.status_code == 201, added.text
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen([*CLI, "serve", "--store", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    reader = socket.socket()
    try:
        base = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout.readline()).group(1)
        from test_web_pages import healthz_when_up

        assert healthz_when_up(base).status_code == 200
        # a slow client: it reads the start of the photo, then nothing more
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.settimeout(30)
        reader.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        reader.sendall(b"GET /images/big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        proc.send_signal(signal.SIGTERM)
        said, _ = proc.communicate(timeout=60)
        reader.close()
    assert len(photo) > 10_000_000
    assert "timeout graceful shutdown exceeded" in said, said  # (it was still being sent)
    assert "Traceback" not in said and "Exception in ASGI application" not in said, said
    assert said.rstrip().endswith("terminated.")
