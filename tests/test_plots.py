"""Figures drawn from shop text."""

from __future__ import annotations

from PIL import Image

from vitrine.plots import plot_confusion_matrix, plot_misclassified, plot_recommendations
from vitrine.store.base import Match, StoredProduct

PRICEY = "R$ 99 (20% off) por R$ 79"  # two '$': matplotlib read a formula between them


def test_shop_text_with_dollar_signs_is_drawn_as_written(tmp_path):
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), "red").save(photo)
    match = Match(StoredProduct("a", str(photo), category="R$ baratos $", name=PRICEY), 0.9)
    done = [plot_recommendations(photo, PRICEY, [match], tmp_path / "rec.png"),
            plot_confusion_matrix([[1, 0], [2, 3]], ["$x$", "R$ 5 $"], tmp_path / "cm.png"),
            plot_misclassified([{"name": PRICEY, "product_id": "a", "labelled": "$a$",
                                 "predicted": "R$ $b", "probability": 0.5,
                                 "image": str(photo)}], tmp_path / "mis.png")]
    for path in done:
        with Image.open(path) as figure:
            assert figure.size[0] > 100
