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


def _photo(path, size=(32, 32)):
    Image.new("RGB", size, "red").save(path)
    return path


def test_a_query_file_name_that_is_not_utf8_is_drawn(tmp_path, recwarn):
    """`search --plot` on a photo named with Latin-1 bytes ("caf\\xe9.jpg") crashed in
    matplotlib with the name's surrogate character; emoji warned on stderr for each glyph."""
    photo = _photo(tmp_path / "p.png")
    name = b"caf\xe9.jpg".decode("utf-8", "surrogateescape")
    match = Match(StoredProduct("a", str(photo), category="c", name="Relógio 😀⌚"), 0.9)
    out = plot_recommendations(photo, name, [match], tmp_path / "rec.png")
    assert out.is_file()
    assert not [w for w in recwarn if "Glyph" in str(w.message)]


def test_titles_are_cut_with_an_ellipsis_and_never_reach_the_edge(tmp_path):
    """Four-line tile titles ran off the top of every recommendation figure (the demo's
    too); a name longer than the title kept no "…", and one long word became just "…"."""
    import numpy as np

    from vitrine.plots import _lines, _width

    (cut,) = _lines("Supercalifragilisticexpialidociousbutwithout", 120, 1)
    assert cut.startswith("Supercalifragilistic") and cut.endswith("…") and _width(cut) <= 120
    assert _lines("Reebok Men Premier Verona Supreme 2 Black Sports Shoes", 120, 2) == [
        "Reebok Men Premier Verona", "Supreme 2 Black Sports…"]
    assert _lines("", 120, 2) == [""]
    photo = _photo(tmp_path / "p.png", (300, 400))
    name = "ADIDAS Men Snova Glide Running Shoes Black Edition"
    matches = [Match(StoredProduct(str(i), str(photo), category="x_tenis_masculino " * 6,
                                   name=name), 0.9) for i in range(3)]
    out = plot_recommendations(photo, name * 2, matches, tmp_path / "rec.png")
    pixels = np.asarray(Image.open(out).convert("L"))
    assert pixels[:3].min() > 240 and pixels[:, -3:].min() > 240  # white margins


def test_a_large_photo_is_shown_at_reduced_scale_not_as_missing(tmp_path):
    """The figure decoded each photo whole, under the default pixel limit: an 8000×6000
    query that search itself took was drawn as "(photo missing)", and large photos cost
    seconds and gigabytes per tile."""
    import matplotlib.pyplot as plt

    from vitrine.plots import TILE_SIDE, _show

    big = _photo(tmp_path / "big.jpg", (8000, 6000))
    fig, ax = plt.subplots()
    _show(ax, big, ["query"])
    assert len(ax.images) == 1
    assert max(ax.images[0].get_array().shape[:2]) <= TILE_SIDE
    plt.close(fig)


def test_a_damaged_photo_is_drawn_as_unreadable_a_gone_one_as_missing(tmp_path):
    """A catalogue photo damaged since it was indexed was drawn as "(photo missing)"."""
    import matplotlib.pyplot as plt

    from vitrine.plots import _show

    (tmp_path / "damaged.jpg").write_bytes(b"\xff\xd8 not a photo any more")
    for path, said in ((tmp_path / "damaged.jpg", "(photo unreadable)"),
                       (tmp_path / "gone.jpg", "(photo missing)")):
        fig, ax = plt.subplots()
        _show(ax, path, ["match"])
        assert not ax.images and [t.get_text() for t in ax.texts] == [said]
        plt.close(fig)


def test_history_names_the_loss_it_shows_and_one_epoch_has_one_tick(tmp_path, monkeypatch):
    """The training loss was labelled "class-weighted, label-smoothed" when it was neither
    (the defaults); one epoch gave ticks 0.96 … 1.04."""
    from vitrine import plots

    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, out: kept.append(fig) or out)
    history = [{"phase": "transfer learning", "loss": 1.0, "val_loss": 1.1, "acc": 0.5,
                "val_acc": 0.4, "best": True}]
    plots.plot_history(history, tmp_path / "h.png")
    plots.plot_history(history, tmp_path / "h.png", train_loss="train (label-smoothed)",
                       refit=True)
    for fig, label, star in ((kept[0], "train", "restored (best validation loss)"),
                             (kept[1], "train (label-smoothed)",
                              "best validation loss (refit trains up to it)")):
        loss = fig.axes[0]
        assert [t.get_text() for t in loss.get_legend().get_texts()] == [
            label, "validation", star]
        assert [t for t in loss.get_xticks() if 0.5 <= t <= 1.5] == [1.0]
        plots.plt.close(fig)


def test_demo_figure_names_of_two_categories_never_collide():
    from vitrine.demo import FILE_NAME_BYTES, _file_name

    assert _file_name("relogio_feminino") == "relogio_feminino"
    assert _file_name("a b") != _file_name("a_b") == "a_b"
    assert len(_file_name("x" * 274).encode()) <= FILE_NAME_BYTES + 9  # ("-" and a digest)
    assert _file_name("x" * 274) != _file_name("x" * 275)


WORLD = "Relógio 腕時計 手表 시계 ⌚😀"  # Latin, Japanese, Chinese, Korean, symbol, emoji


def test_names_in_other_scripts_and_emoji_are_drawn_with_the_fallback_fonts(tmp_path, caplog):
    """Chinese, Japanese and Korean names and emoji showed as boxes (DejaVu Sans has none of
    them): the titles fall back, glyph by glyph, to the fonts the machine has for them
    (./scripts/test installs Debian's fonts-wqy-microhei and fonts-symbola)."""
    from conftest import require

    from vitrine import plots

    plots._note_missing.cache_clear()
    photo = _photo(tmp_path / "p.png")
    match = Match(StoredProduct("a", str(photo), category="手表", name=WORLD), 0.9)
    with caplog.at_level("WARNING", logger="vitrine.plots"):
        plot_recommendations(photo, WORLD, [match], tmp_path / "rec.png")
        plot_confusion_matrix([[1, 0], [2, 3]], ["手表", "시계 ⌚"], tmp_path / "cm.png")
    if plots.MISSING_NOTE in caplog.messages:
        for font in ("WenQuanYi Micro Hei", "Symbola"):  # (another machine may have others)
            if font not in plots.font_families():
                require(tmp_path / font, f"the font {font}")  # fails in CI, skips elsewhere
    assert plots.MISSING_NOTE not in caplog.messages
    plots._note_missing.cache_clear()


def test_a_glyph_no_font_has_is_said_once_not_per_glyph(tmp_path, monkeypatch, caplog,
                                                         recwarn):
    """Without a font for them, the boxes are said once a process, in one sentence naming
    fonts to install (matplotlib warned once per glyph, on every figure)."""
    from vitrine import plots, plots_fonts, plots_text

    for module in (plots_fonts, plots_text):  # (the drawing's fonts, the titles' measures)
        monkeypatch.setattr(module, "font_families", lambda: ("DejaVu Sans",))
    plots._note_missing.cache_clear()
    photo = _photo(tmp_path / "p.png")
    match = Match(StoredProduct("a", str(photo), category="c", name=WORLD), 0.9)
    with caplog.at_level("WARNING", logger="vitrine.plots"):
        plot_recommendations(photo, WORLD, [match], tmp_path / "a.png")
        plot_recommendations(photo, "腕時計", [match], tmp_path / "b.png")
    assert caplog.messages == [plots.MISSING_NOTE]
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    plots._note_missing.cache_clear()


def test_control_characters_in_names_are_drawn_as_spaces(tmp_path, caplog):
    """An escape code or a bell in a name or category (a table may hold them) was drawn as a
    box, and the note said a font would draw it (helper-145: none does)."""
    from vitrine import plots

    plots._note_missing.cache_clear()
    photo = _photo(tmp_path / "p.png")
    match = Match(StoredProduct("a", str(photo), category="cat\x07bell", name="Nome\x1b[31mX"),
                  0.9)
    with caplog.at_level("WARNING", logger="vitrine.plots"):
        plot_recommendations(photo, "q\x85uery\x00", [match], tmp_path / "rec.png")
        plot_confusion_matrix([[1, 0], [2, 3]], ["a\x1bb", "c\td"], tmp_path / "cm.png")
    assert plots.MISSING_NOTE not in caplog.messages
    assert plots._lines("Nome\x1b[31mX\tfim", plots.TILE_TEXT, 2) == ["Nome [31mX fim"]
    plots._note_missing.cache_clear()


def _drawn(monkeypatch, written: bool = True) -> list:
    """The figures the plot functions draw, kept (not closed) for a test to read; not
    written (``written`` False) for a test that reads the figures alone, not their files:
    writing the PNG draws the whole figure twice, most of a large figure's time."""
    import vitrine.plots

    figures: list = []
    save = vitrine.plots._save

    def keep(fig, out):
        figures.append(fig)
        return save(fig, out) if written else out

    monkeypatch.setattr(vitrine.plots, "_save", keep)
    monkeypatch.setattr(vitrine.plots.plt, "close", lambda *a, **k: None)
    return figures


def test_the_confusion_matrix_stays_a_figure_whatever_the_classes(tmp_path, monkeypatch):
    """200 categories drew a 16,778 x 15,230 figure (255 megapixels, which Pillow then
    refuses to open) with 40,000 counts: 4 minutes and 11.6 GB after the training was done.
    Its side is bounded; past 40 classes it writes only the mistakes' counts, past 150 none,
    and classes are numbered where their names no longer fit."""
    import numpy as np

    from vitrine.plots import COUNTS_ALL, COUNTS_MISTAKES

    figures = _drawn(monkeypatch)
    for n in (8, COUNTS_ALL + 20, COUNTS_MISTAKES + 50, 400):
        matrix = np.eye(n, dtype=int) * 5
        matrix[1, 0] = matrix[n - 1, 2] = 3  # two mistakes
        names = [f"categoria_{i:03d}" for i in range(n)]
        out = plot_confusion_matrix(matrix, names, tmp_path / f"cm{n}.png")
        with Image.open(out) as figure:
            assert max(figure.size) < 3_200, (n, figure.size)
        ax = figures[-1].axes[0]
        counts = [t.get_text() for t in ax.texts]
        ticks = [t.get_text() for t in ax.get_yticklabels()]
        assert len(counts) == (64 if n == 8 else 2 if n <= COUNTS_MISTAKES else 0)
        if n < 400:
            assert ticks == names and ax.get_xlabel() == "predicted"
        else:  # 400 names 5.9 points apart
            assert ticks[:3] == ["1", "11", "21"] and "numbered" in ax.get_xlabel()
        # the report's table numbers its classes when (only when) the figure does
        from vitrine.report import prf_table

        table = prf_table({name: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1,
                                  "predicted": 1} for name in names})
        assert table[2].startswith("| 1 | categoria_000 |") == (n == 400)
        assert table[-1].startswith(f"| {n} | ") == (n == 400)
    # a long name (a product table's category) is cut, not drawn whole across the figure
    from vitrine.plots import TICK_NAME, _width

    long = "Relógios " + "x" * 200
    plot_confusion_matrix(np.eye(3, dtype=int), ["a", long, "c"], tmp_path / "long.png")
    ax = figures[-1].axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "a" and ticks[1].startswith("Relógios") and ticks[1].endswith("xxx")
    assert "…" in ticks[1] and TICK_NAME - 15 < _width(ticks[1]) <= TICK_NAME


def test_a_misclassified_tile_names_label_and_guess(tmp_path, monkeypatch):
    """'label: x_sapato_social_masculino' wrapped as one text moved the name to a second
    line, which the one-line title then dropped: tiles read "label:…" and "model:…" for
    the demo's own categories."""
    photo = _photo(tmp_path / "p.png")
    figures = _drawn(monkeypatch)
    plot_misclassified([{"name": "Sapato", "product_id": "10146", "probability": 0.49,
                         "labelled": "x_sapato_social_masculino",
                         "predicted": "mocassim_masculino", "image": str(photo)},
                        {"name": "", "product_id": "7", "probability": 0.5,
                         "labelled": "relogio de pulso feminino com pulseira de aço",
                         "predicted": "b", "image": str(photo)}], tmp_path / "mis.png")
    titles = [ax.get_title().split("\n") for ax in figures[-1].axes[:2]]
    assert titles[0] == ["Sapato", "label: x_sapato_social_masculino",
                         "model: mocassim_masculino (49%)"]
    # (where the cut falls hangs on the renderer's widths: matplotlib 3.8 measures other)
    assert titles[1][1].startswith("label: relogio de…")
    assert titles[1][1].endswith("ulseira de aço")


JAPANESE = "レディース腕時計ゴールドステンレススチールクリスタル限定モデル"
ARABIC = "حقيبة يد نسائية جلد طبيعي لون أسود مقاس كبير"


def test_wide_names_stay_over_their_own_tile(tmp_path, monkeypatch):
    """Titles were wrapped counting characters, but a Japanese or Chinese character or an
    emoji is about twice as wide as a Latin letter: a Japanese name of 31 characters was two
    tiles wide, 30 emoji 310 pixels in a tile of 262, over the neighbours' titles
    (helper-238). Names with no spaces break between characters; Arabic keeps whole
    words."""
    figures = _drawn(monkeypatch)
    photo = _photo(tmp_path / "p.png", (300, 400))
    names = [JAPANESE, "👜" * 30, "女士手表金色不锈钢水晶限量版型号女士手表金色不锈钢水晶", ARABIC,
             "Relógio Feminino Dourado Pulseira Aço Inoxidável Cristal"]
    category = "腕時計レディースゴールド限定カテゴリー"
    matches = [Match(StoredProduct(str(i), str(photo), category=category, name=name), 0.9)
               for i, name in enumerate(names)]
    plot_recommendations(photo, JAPANESE, matches, tmp_path / "rec.png")
    fig = figures[-1]
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    tile = fig.bbox.width / len(fig.axes)
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 < right.x0, "a title runs over its neighbour's"
    assert all(box.width < tile for box in boxes)
    titles = [ax.get_title().split("\n") for ax in fig.axes]
    assert "".join(titles[1][:2]) == JAPANESE  # wrapped whole, nothing lost, in 2 lines
    assert "".join(titles[2][:2]) == "👜" * 30
    assert titles[1][2] == category or (  # (whole, or cut in its middle where the renderer
        titles[1][2].startswith("腕時計") and "…" in titles[1][2]  # measures it wider: 3.8)
        and titles[1][2].endswith("カテゴリー"))
    assert all(set(line.split()) <= set(ARABIC.split()) for line in titles[4][:2])
    assert titles[5][:2] == ["Relógio Feminino Dourado Pulseira", "Aço Inoxidável Cristal"]


def test_history_phase_names_sit_above_the_curves_whole_and_apart(tmp_path, monkeypatch):
    """The phase names were written inside the plots along their top, where the first
    epoch's loss and any accuracy of 1.0 ran through them, and after 40 epochs of transfer
    learning and one of fine-tuning "fine-tuning" ran past the frame (helper-238)."""
    from vitrine import plots

    figures = _drawn(monkeypatch)
    for first, then in ((40, 1), (1, 20), (5, 5)):
        history = [{"phase": "transfer learning" if i < first else "fine-tuning",
                    "loss": 2.5 - 0.05 * i, "val_loss": 2.4 - 0.04 * i,
                    "acc": min(1.0, 0.5 + 0.1 * i), "val_acc": 0.4, "best": i == first - 1}
                   for i in range(first + then)]
        plots.plot_history(history, tmp_path / "h.png")
        fig = figures[-1]
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            frame = ax.get_window_extent(renderer)
            title = ax.title.get_window_extent(renderer)
            names = sorted(ax.texts, key=lambda t: t.get_window_extent(renderer).x0)
            assert [t.get_text() for t in names] == ["transfer learning", "fine-tuning"]
            boxes = [t.get_window_extent(renderer) for t in names]
            for box in boxes:
                assert box.y0 >= frame.y1, (first, then)  # above the curves
                assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, (first, then)
                assert not box.overlaps(title)
            assert boxes[0].x1 < boxes[1].x0, (first, then)


CATEGORIES = ["acessorios_masculinos_relogios_de_pulso", "acessorios_masculinos_relogios_de_bolso",
              "acessorios_femininos_bolsas_de_mao_couro_legitimo",
              "acessorios_femininos_bolsas_de_ombro_couro_legitimo",
              "acessorios_femininos_AAAA_bolsas_de_ombro_couro_legitimo",
              "acessorios_femininos_BBBB_bolsas_de_ombro_couro_legitimo"]


def test_long_categories_sharing_their_start_are_drawn_different(tmp_path, monkeypatch):
    """Cut at the end, long categories sharing their start read the same: misclassified.png
    titled "label: acessorios_masculinos_re…, model: acessorios_masculinos_re…" and the
    confusion matrix had two identical names (helper-238). Each category of a figure is
    drawn one way, and two categories never alike."""
    import numpy as np

    figures = _drawn(monkeypatch)
    photo = _photo(tmp_path / "p.png")
    rows = [{"name": "x", "product_id": "1", "probability": 0.49, "image": str(photo),
             "labelled": CATEGORIES[i], "predicted": CATEGORIES[i ^ 1]} for i in range(6)]
    plot_misclassified(rows, tmp_path / "mis.png")
    titles = [ax.get_title().split("\n") for ax in figures[-1].axes[:6]]
    labelled = [t[1].removeprefix("label: ") for t in titles]
    predicted = [t[2].removeprefix("model: ").removesuffix(" (49%)") for t in titles]
    assert len(set(labelled)) == 6 and predicted == [labelled[i ^ 1] for i in range(6)]
    assert all("…" in name for name in labelled)
    plot_confusion_matrix(np.eye(6, dtype=int), CATEGORIES, tmp_path / "cm.png")
    ax = figures[-1].axes[0]
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        assert len({t.get_text() for t in ticks}) == 6
    matches = [Match(StoredProduct(str(i), str(photo), category=c, name="x"), 0.9)
               for i, c in enumerate(CATEGORIES[:5])]
    plot_recommendations(photo, "q", matches, tmp_path / "rec.png")
    assert len({ax.get_title().split("\n")[1] for ax in figures[-1].axes[1:]}) == 5


def test_many_matches_wrap_into_rows_the_query_first(tmp_path, monkeypatch):
    """--k 100 drew every tile in one row, a figure 26,653 pixels wide (helper-238): past 6
    tiles they wrap into rows of 6, in order; 5 matches stay one row."""
    figures = _drawn(monkeypatch)
    photo = _photo(tmp_path / "p.png", (300, 400))
    for k, rows in ((5, 1), (6, 2), (100, 17)):
        matches = [Match(StoredProduct(str(i), str(photo), category="c", name=f"Produto {i}"),
                         0.9 - i / 1000) for i in range(k)]
        out = plot_recommendations(photo, "q", matches, tmp_path / f"rec{k}.png")
        with Image.open(out) as figure:
            assert figure.size[0] < 1_700, (k, figure.size)
        axes = figures[-1].axes
        assert axes[0].get_subplotspec().get_geometry()[:2] == (rows, min(6, k + 1))
        assert axes[0].get_title() == "Query: q"
        assert [ax.get_title().split("\n")[0] for ax in axes[1:k + 1]] == [
            f"Produto {i}" for i in range(k)]
        tops = [round(ax.get_position().y1, 3) for ax in axes]
        assert tops == sorted(tops, reverse=True)  # row by row, top down


def test_confusion_matrix_names_do_not_run_into_each_other(tmp_path, monkeypatch):
    """From about 125 classes to 270 the 8-point names slanted at 45 degrees in cells of 10
    points or less overlapped their neighbours (helper-238)."""
    import math

    import numpy as np

    figures = _drawn(monkeypatch, written=False)  # (laid out by tight_layout when drawn;
    # the PNG is not read)
    for n in (150, 270):
        names = [f"categoria_{i:03d}" for i in range(n)]
        plot_confusion_matrix(np.eye(n, dtype=int), names, tmp_path / f"cm{n}.png")
        fig = figures[-1]
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        apart = abs(ax.transData.transform((1, 1)) - ax.transData.transform((0, 0)))
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        for ticks, step, across in ((ax.get_xticklabels(), apart[0], math.sin),
                                    (ax.get_yticklabels(), apart[1], math.cos)):
            for tick in ticks[:3]:
                _, height, _ = renderer.get_text_width_height_descent(
                    tick.get_text(), tick.get_fontproperties(), ismath=False)
                # the distance between two neighbours, across their slant
                assert height <= step * across(math.radians(tick.get_rotation())), n


def test_odd_names_are_wrapped_quickly_and_inside_their_tile(monkeypatch):
    """A category of 10,000 zero-width characters (each a cut of no width) took minutes to
    shorten (a measure of each of its ends); a line broke at a no-break space ("R$" apart
    from its price); a run of joined emoji with no cut allowed ran two tiles wide
    (helper-241)."""
    from vitrine import plots, plots_text

    measured = []
    width = plots._width
    monkeypatch.setattr(plots_text, "_width", lambda text, *a: (measured.append(len(text)),
                                                               width(text, *a))[1])
    plots._short_names(["a" + "\u200b" * 10_000], plots.TILE_TEXT)
    assert len(measured) < 1000 and max(measured) < 1000, (len(measured), max(measured))
    monkeypatch.undo()
    assert plots._lines("Relógio Feminino Dourado Pulseira R$\u00a0199,90", 150, 3)[-1] == \
        "R$\u00a0199,90"
    lines = plots._lines("👩\u200d" * 40 + "👩", plots.TILE_TEXT, 2)
    assert all(line and plots._width(line) <= plots.TILE_TEXT for line in lines)


def test_names_alike_in_two_places_are_drawn_apart():
    """Four categories alike at their start and end, differing in two places: each pair
    still alike once shortened was numbered 1, 2 on its own, so "Relógio Feminino —… (1)"
    stood for two categories, on one misclassified tile as its label and the model's guess
    (helper-268); every name is drawn differently, within its room."""
    from vitrine import plots

    room = plots.MISCLASSIFIED_TEXT - max(plots._width("label: "),
                                          plots._width("model: ") + plots._width(" (99.9%)"))
    names = [f"Relógio {kind} — {style} (São Paulo, Açaí & Ébano)"
             for style in ("estilo urbano", "edição limitada")
             for kind in ("Feminino", "Masculino")]
    short = plots._short_names(names, room)
    assert len(set(short.values())) == len(names), short
    assert all(plots._width(text) <= room for text in short.values()), short
