"""Wording of `vitrine info`'s index line."""

from __future__ import annotations

import pytest

from vitrine.display import index_line


def test_the_index_line_does_not_end_in_a_dangling_word():
    """It ended "…; approximate from 100,000 products on", read as a line cut short."""
    line = index_line({"kind": "flat", "exact": True, "storage": "fp32",
                       "approximate_from": 100_000})
    assert line.endswith("approximate (HNSW) once the store holds 100,000 products"), line


def test_one_unreadable_photo_is_not_none_of_1_photos(tmp_path):
    """`vitrine dedupe` on a folder of one file that is no photo said "none of the 1 photos
    in … could be read"; `evaluate` would say the same of a catalogue of one photo."""
    from types import SimpleNamespace

    from vitrine.config import Settings
    from vitrine.dedupe_files import dedupe_folders
    from vitrine.errors import CatalogError
    from vitrine.model_eval import none_read

    (tmp_path / "a.jpg").write_text("not a photo")

    class Unreadable:  # (no model loaded: every photo fails to decode)
        def duplicate_rules(self):
            return None

        def embed_paths(self, paths, on_progress=None):
            for i, _ in enumerate(paths):
                yield SimpleNamespace(index=i, error="not a recognised image format.")

    with pytest.raises(CatalogError) as raised:
        dedupe_folders([tmp_path], Settings(), embedder=Unreadable(), show_progress=False)
    said = str(raised.value)
    assert said.startswith(f"the one photo in {tmp_path} could not be read ("), said
    product = SimpleNamespace(image=tmp_path / "a.jpg")
    said = str(none_read([product], [(0, "not a recognised image format.")]))
    assert said.startswith("the one photo could not be read ("), said


def test_evaluation_counts_one_duplicate_group_in_the_singular():
    """`vitrine evaluate` on the demo catalogue: "1 duplicate group(s): … each group queries
    once (1 of its photos' copies do not)"."""
    from vitrine.train_display import evaluation_tables

    scores = {"precision": 0.9, "recall": 0.03, "map": 0.9}
    report = {"k": 5, "retrieval": {"pretrained": {**scores, "per_category": {"a": scores}}},
              "duplicate_groups": 1, "copies_among_queries": 1,
              "protocol": "leave-one-out", "queries": 1015, "index": 1016}
    first = str(evaluation_tables(report)[0])
    assert "1 duplicate group: " in first and "(1 copy does not query)" in first, first


def test_a_server_on_every_address_prints_one_a_browser_opens():
    """`vitrine serve --host 0.0.0.0` said "Vitrine is serving at http://0.0.0.0:PORT"."""
    from vitrine.server import address, bind

    sock = bind("0.0.0.0", 0)
    try:
        port = sock.getsockname()[1]
        assert address(sock) == f"http://127.0.0.1:{port}"
    finally:
        sock.close()
