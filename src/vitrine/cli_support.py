"""What the commands of :mod:`vitrine.cli` share: option types, settings, JSON output, store
and recommender opening, the ``--category`` check (``--plot``'s checks are
:mod:`vitrine.cli_plot`'s; the process around the commands, :mod:`vitrine.cli_run`'s)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from vitrine.config import Settings, env_value, load_settings, unknown_settings
from vitrine.errors import VitrineError
from vitrine.jsonfile import finite, json_text

if TYPE_CHECKING:
    from vitrine.store.filters import ProductFilter

# What the commands print holds the shop's data (product names, categories, paths, skip
# reasons): printed as it is, never read as rich markup ("Promo [/promo]" crashed the
# command) or emoji codes; styling is given with Text objects where wanted.
out = Console(markup=False, emoji=False, soft_wrap=True)
err = Console(stderr=True, markup=False, emoji=False, soft_wrap=True)
"""Lines are not wrapped at the console's width (80 when piped): a path or an error in a log
or a script's capture stays on one line; tables still fit the width."""

def path_of(name: str) -> Callable[[str], Path]:
    """The parser of a path parameter ``name``: an empty one (an unset shell variable,
    `vitrine index "$CATALOG"`) is an error saying so, where typer read it as the folder the
    command ran in (a store made of every photo under it: helper-187); ``~`` is the home
    folder in each (a shell leaves it as it is after '=': ``--plot=~/x.png`` made a folder
    named "~" where the command ran, ``--out=~/r.csv`` was "no folder ~": helper-230)."""
    def parse(text: str) -> Path:
        if isinstance(text, Path):  # (a default)
            return text
        if not text:
            raise VitrineError(f"{name} is empty (an unset shell variable?); name it.")
        try:
            return Path(text).expanduser()
        except RuntimeError:  # (no HOME, or '~name' of no such user)
            raise VitrineError(f"{name} {text!r} starts with '~', but that home folder is "
                               "unknown here; write the full path.") from None
    return parse


StoreOpt = Annotated[str, typer.Option(
    "--store", "-s", help="Store: a folder (embedded default), milvus-lite:///PATH.db "
    "(absolute path) or milvus://HOST\\[:PORT] (a Milvus server; /NAME after it names a "
    "collection other than vitrine).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="Local backbone weights (torchvision state_dict); default: "
    "VITRINE_WEIGHTS, else torchvision's download.", parser=path_of("--weights"))]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
KOpt = Annotated[int, typer.Option("--k", "-k", min=1, max=100,
                                   help="Number of results (1 to 100).")]
CategoryOpt = Annotated[str | None, typer.Option("--category", "-c",
                                                 help="Only products of this category.")]
MinPriceOpt = Annotated[str | None, typer.Option(
    "--min-price", metavar="PRICE",
    help="Only products priced at least PRICE (a product without a price is left out).")]
MaxPriceOpt = Annotated[str | None, typer.Option(
    "--max-price", metavar="PRICE",
    help="Only products priced at most PRICE (a product without a price is left out).")]
AttrOpt = Annotated[list[str] | None, typer.Option(
    "--attr", metavar="KEY=VALUE",
    help="Only products whose attribute KEY is VALUE exactly (repeat it: each must hold).")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Save a figure (.png, .jpg, "
                                                          ".jpeg, .pdf or .svg).",
                                              parser=path_of("--plot"))]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", help="Trained model folder (vitrine train --out) to embed with; default: "
    "VITRINE_MODEL, else the pretrained backbone.", parser=path_of("--model"))]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")]


_NOTED: list[str] = []  # (the notes on the environment said in this process)


def read_settings(given: dict[str, tuple[str, object]] | None = None) -> Settings:
    """:func:`vitrine.config.load_settings`, the variables that name no setting said once
    on stderr (:func:`vitrine.config.unknown_settings`)."""
    settings = load_settings(given)
    for note in unknown_settings():
        _note_once(note)
    return settings


def api_key_note(settings: Settings) -> str | None:
    """A note for a server whose VITRINE_API_KEY is set but blank (read as unset, every write
    was refused, 403 "set VITRINE_API_KEY", while the start said nothing: helper-230), or
    shorter than :data:`STRONG_KEY_LENGTH` (guessable); None for none or a long one."""
    if settings.api_key is None and env_value("VITRINE_API_KEY", None) is not None:
        return ("note: VITRINE_API_KEY is blank, so writes through the API stay refused; set "
                "it to the key clients send.")
    if settings.api_key is not None and len(settings.api_key) < STRONG_KEY_LENGTH:
        # (any key was taken: "a" too, and wrong keys are answered hundreds a second,
        # helper-238)
        return (f"note: VITRINE_API_KEY is {len(settings.api_key)} character"
                f"{'' if len(settings.api_key) == 1 else 's'} long, which whoever can reach "
                f"the server may guess; use {STRONG_KEY_LENGTH} or more random ones, such as "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(24))' prints.")
    return None


STRONG_KEY_LENGTH = 16
"""A key shorter than this is said to be guessable when the server starts."""


def command_settings(weights: Path | None = None, model: Path | None = None, *,
                     embeds: bool = True,
                     given: dict[str, tuple[str, object]] | None = None) -> Settings:
    """The settings, with the command line's --weights or --model, and the other options
    ``given`` (setting: option, value), over the environment's, whose values of them are
    not read (:func:`vitrine.config.load_settings`; --weights means the pretrained
    backbone, whatever VITRINE_MODEL says). For a command that ``embeds`` with the model, a
    VITRINE_MODEL that names no model is said as the setting's (`train` writes models; it
    reads none)."""
    if weights is not None and model is not None:
        raise VitrineError("--weights and --model each choose the model to embed with (the "
                           "pretrained backbone, or a trained one); pass one of them.")
    given = dict(given or {})
    if weights is not None:
        given.update(weights=("--weights", weights), model=("--weights", None))
    if model is not None:
        given["model"] = ("--model", model)
    settings = read_settings(given)
    if embeds and settings.model is not None:  # (before the store: a typo was said to be
        # "a trained model here", against the store's kind: helper-187; from the environment,
        # named as the setting: a path set in a shell profile long ago reads as the
        # command's own mistake)
        from vitrine.catalog import not_a_model

        if why := not_a_model(settings.model):
            raise VitrineError(f"--model {why}" if model is not None else
                               f"setting VITRINE_MODEL={why}")
        _note_once(trained_model_note(model is not None))
    return settings


def trained_model_note(by_option: bool) -> str | None:
    """A note for VITRINE_BACKBONE or VITRINE_RESIZE set while a trained model embeds: it
    embeds with its own backbone and resize, and the setting changed nothing without a word
    (VITRINE_RESIZE=pad gave the same vectors as crop)."""
    named = [name for name in ("VITRINE_BACKBONE", "VITRINE_RESIZE")
             if (env_value(name, "") or "").strip()]
    if not named:
        return None
    source = "--model" if by_option else "VITRINE_MODEL"
    return (f"note: {' and '.join(named)} {'apply' if len(named) > 1 else 'applies'} to the "
            f"pretrained backbone; the trained model ({source}) embeds with the backbone and "
            "resize it was trained with.")


def _note_once(note: str | None) -> None:
    """``note`` on stderr, once in this process."""
    if note and note not in _NOTED:
        _NOTED.append(note)
        err.print(note, markup=False, soft_wrap=True)


def json_line(data: dict) -> str:
    """``data`` as one line of JSON in UTF-8."""
    return json_text(data, allow_nan=False) + "\n"


def print_json(data: dict) -> None:
    """``data`` as one line of JSON on stdout, in UTF-8 whatever the terminal's encoding (JSON
    is UTF-8; under PYTHONIOENCODING=ascii an emoji in a product name crashed the command)."""
    line = json_line(finite(data))
    sys.stdout.flush()  # what was printed before comes first
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (a test's capture)
        sys.stdout.write(line)
        sys.stdout.flush()
    else:
        buffer.write(line.encode("utf-8"))  # (json_line escapes what UTF-8 cannot hold)
        buffer.flush()


def open_recommender(store: Path, weights: Path | None, model: Path | None = None, *,
                     embeds: bool = True):
    from vitrine.recommend import Recommender
    from vitrine.store import store_for

    settings = command_settings(weights, model, embeds=embeds)
    return Recommender(store_for(store, settings), settings)


def product_filter(min_price: str | None, max_price: str | None,
                   attrs: list[str] | None) -> ProductFilter | None:
    """``--min-price``, ``--max-price`` and ``--attr`` as a filter (None: none given); a
    price that is no number, a minimum above the maximum or an ``--attr`` without ``=`` is
    one sentence (exit status 2)."""
    from vitrine.store.filters import parse_filter

    try:
        return parse_filter(min_price, max_price, attrs or (),
                            names=("--min-price", "--max-price", "--attr"))
    except ValueError as exc:
        raise VitrineError(str(exc)) from None


def check_category(rec, category: str | None) -> str | None:
    """``--category`` as the store spells it (either Unicode form of its accents), or the
    one category it names in another case, without accents or with spaces for underscores,
    as the web pages find it (it had to be typed exactly); an unknown one is an error naming
    the store's categories (a typo would otherwise look like 'no similar products')."""
    if category is None:
        return None
    from vitrine.catalog import categories_by_key, named_alike, reader_order, stored_category
    from vitrine.fold import fold
    from vitrine.web.categories import category_names, near_categories

    known = rec.store.categories()
    category = stored_category(category, known)
    if category in known:
        return category
    alike = named_alike(category, categories_by_key(known))
    if len(alike) == 1:
        return alike[0]
    if alike:
        raise VitrineError(f"the store has no products of category {category!r}, but "
                           f"{' and '.join(repr(c) for c in sorted(alike))}, which differ only in "
                           "case, accents or spaces; name one as it is written.")
    if len(known) <= CATEGORIES_NAMED:
        raise VitrineError(f"the store has no products of category {category!r}; it has "
                           f"{', '.join(repr(c) for c in reader_order(known)) or 'none'}.")
    # (a store of 2,000 categories named them all in one line of 35 kB: helper-244); those
    # the pages suggest
    near = near_categories(fold(category.strip()), known, category_names(known, len(known)))
    raise VitrineError(f"the store has no products of category {category!r} among its "
                       f"{len(known):,} categories" + (
                           f"; close to it: {', '.join(repr(c) for c in near)}." if near else
                           "; `vitrine info` lists them."))


CATEGORIES_NAMED = 20
"""An unknown ``--category`` names every category of a store of at most this many, else
those whose names hold it or are spelled close to it
(:func:`vitrine.web.categories.near_categories`)."""


def program() -> str:
    """How to run this Vitrine again from the current folder, for a command the output
    suggests: the path of the ``vitrine`` script that runs (as seen from here, when it is
    inside), or this interpreter with ``-m vitrine``. A bare "vitrine" was not found in the
    shell after ``./scripts/demo``, which puts ``.venv/bin`` on the PATH of its own run only
    (helper-176)."""
    import shlex

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if script.name != "vitrine" or not script.is_file():
        return f"{shlex.quote(sys.executable)} -m vitrine"
    shown = os.path.relpath(script.absolute())
    if shown.startswith(".."):  # (not inside: all of it)
        shown = str(script.absolute())
    return shlex.quote(shown if os.sep in shown else os.path.join(".", shown))
