"""Numbers the pages and the terminal write: limits grouped as every other number of the
page, and a price to the cent as the pages say it."""

from __future__ import annotations

import io

import pytest


@pytest.mark.parametrize("lang, mb, mp", [("pt", "2.500", "1.500"), ("en", "2,500", "1,500")])
def test_limits_of_a_thousand_or_more_are_grouped_per_language(lang, mb, mp):
    """'até 2500 MB' and 'limite de 1500 megapixels' beside '65.535 pixels' on the same
    pages: a limit's whole part is grouped as the pages group every number."""
    from vitrine.config import Settings
    from vitrine.errors import ImageError
    from vitrine.web.pages import Pages

    pages = Pages(None, Settings(max_upload_bytes=2_500_000_000,
                                 max_image_pixels=1_500_000_000))
    assert pages.max_mb(lang) == mb
    assert f" {mp} megapixels" in pages.photo_refused(ImageError("x", "y", kind="pixels"), lang)
    # (below a thousand as before: one decimal at most, the language's own mark)
    small = Pages(None, Settings(max_upload_bytes=5_242_880, max_image_pixels=300_000))
    assert small.max_mb(lang) == ("5,2" if lang == "pt" else "5.2")
    assert f" {'0,3' if lang == 'pt' else '0.3'} megapixels" in small.photo_refused(
        ImageError("x", "y", kind="pixels"), lang)


@pytest.mark.parametrize("price, shown, page", [(0.125, "0.13", "R$\u00a00,13"),
                                                (1.005, "1.01", "R$\u00a01,01"),
                                                (-0.0, "0.00", "R$\u00a00,00"),
                                                (1299.9, "1299.90", "R$\u00a01.299,90")])
def test_the_terminal_says_a_price_as_the_product_page_does(price, shown, page):
    """`vitrine similar` printed 0.12 (and -0.00) for a product whose page says R$ 0,13
    (R$ 0,00): the float's own rounding, where the pages round the cent half up."""
    from rich.console import Console

    from vitrine.display import results_table
    from vitrine.store.base import Match, StoredProduct
    from vitrine.web.text import format_price

    product = StoredProduct("p1", "p1.jpg", "c", "Name", price)
    out = io.StringIO()
    Console(file=out, width=200).print(results_table("Similar to p1", [Match(product, 0.5)]))
    row = next(line for line in out.getvalue().splitlines() if "p1" in line and "Name" in line)
    assert row.split("│")[-2].strip() == shown
    assert format_price(price, "pt") == page
