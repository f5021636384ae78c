"""`vitrine similar` and `search` with a price or attribute filter that leaves every product
out said "the store holds no other one (of the category asked for)": a store of a thousand
products (the demo's, which has no prices: README's `--max-price 200` there finds nothing),
no category asked for. The sentence under the empty table now says the filter is why."""

from __future__ import annotations

from test_store import MANIFEST, record, unit

from vitrine.store import open_store


def _said(proc) -> str:
    return " ".join(proc.stdout.split())  # (the caption is wrapped to the table's width)


def test_an_empty_list_names_the_filter_not_an_empty_store(tmp_path, cli_here):
    store = open_store(tmp_path / "s", create=True)
    store.set_manifest(MANIFEST)
    store.upsert([record(f"p{i}", unit(1, i), attributes={"colour": "Black"})
                  for i in range(3)])  # (no prices, as the demo catalogue's)
    store.flush()
    store.close()
    for narrowed in (["--max-price", "200"], ["--attr", "colour=black"],
                     ["--category", "c", "--min-price", "1"]):
        proc = cli_here("similar", "p0", "--store", tmp_path / "s", *narrowed)
        said = _said(proc)
        assert ("No product to show: none of the store's other products (of the category "
                "asked for) passes the price and attribute filter.") in said, narrowed
        assert "holds no other one" not in said
    # the same filter that some pass lists them; without a filter the sentence is as it was
    proc = cli_here("similar", "p0", "--store", tmp_path / "s", "--attr", "colour=Black")
    assert "P1" in proc.stdout and "No product to show" not in proc.stdout
    lone = open_store(tmp_path / "lone", create=True)
    lone.set_manifest(MANIFEST)
    lone.upsert([record("p0", unit(1))])
    lone.flush()
    lone.close()
    said = _said(cli_here("similar", "p0", "--store", tmp_path / "lone"))
    assert "No product to show: the store holds no other one (of the category asked for)." \
        in said
