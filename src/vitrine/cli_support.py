"""What the commands of :mod:`vitrine.cli` share: option types, settings, JSON output, store
and recommender opening, ``--plot`` and ``--category`` checks."""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vitrine.config import Settings, env_value, load_settings, unknown_settings
from vitrine.display import one_line
from vitrine.errors import VitrineError, refused_sentence
from vitrine.files import descriptor, is_stream
from vitrine.jsonfile import finite, json_text

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


def plot_path(plot: Path | None) -> Path | None:
    """The figure file ``--plot`` names (``.png`` added to a name without a suffix); a
    folder or an unknown format is an error before any work."""
    if plot is None:
        return None
    if str(plot) == "-":  # (the usual name of standard output: a file "-.png" was written,
        # "Figure saved to -.png", exit 0: helper-238)
        raise VitrineError("--plot - would be standard output, where the results go; name "
                           "a file, or another descriptor (--plot /dev/fd/3 3> fig.png).")
    if plot.is_dir():
        raise VitrineError(f"--plot {plot} is a folder; name a file such as {plot}/fig.png.")
    _refuse_stdout(plot)
    if is_stream(plot):  # /dev/null, a named pipe, /dev/fd/3: written there (as PNG unless
        # its suffix names a format)
        _check_descriptor(plot)
        return plot
    if not plot.suffix:  # "fig" or "fig." → fig.png
        plot = plot.with_name(plot.name.rstrip(".") + ".png")
        _refuse_stdout(plot)
        return plot
    from vitrine.plots import FORMATS  # (matplotlib: the figure is drawn with it anyway)

    if plot.suffix[1:].lower() not in FORMATS:
        raise VitrineError(f"--plot {plot}: use a file ending in "
                           f"{', '.join('.' + f for f in FORMATS)}.")
    return plot


def _check_descriptor(plot: Path) -> None:
    """Refuse a descriptor the command was not given open for writing (checked before the
    store is opened: ``--plot /dev/fd/3`` without ``3>`` wrote the figure over the store's
    database, which took descriptor 3; with ``3< products.csv``, over the table), and
    standard input (``--plot /dev/stdin < products.csv``)."""
    fd = descriptor(plot)
    if fd == 0:
        raise VitrineError(f"--plot {plot} is this command's standard input; name a file, or "
                           "another descriptor (--plot /dev/fd/3 3> fig.png).")
    if fd is not None:
        try:
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            raise VitrineError(f"--plot {plot}: descriptor {fd} is not open; open it for the "
                               f"figure (--plot /dev/fd/{fd} {fd}> fig.png), or name a "
                               "file.") from None
        if mode == os.O_RDONLY:  # (3< products.csv: the figure went over the table)
            raise VitrineError(f"--plot {plot}: descriptor {fd} is open for reading only; "
                               f"open it for the figure (--plot /dev/fd/{fd} {fd}> fig.png), "
                               "or name a file.")


def _refuse_stdout(plot: Path) -> None:
    """Refuse the file or pipe standard output writes to (``--plot fig.png > fig.png``: the
    figure replaced the file, and the results went to the unlinked one), but /dev/null."""
    if _is_stdout(plot) and os.path.abspath(plot) != os.devnull:  # (>/dev/null too)
        raise VitrineError(f"--plot {plot} is this command's standard output, where its "
                           "results go; name a file, or another descriptor (--plot "
                           "/dev/fd/3 3> fig.png).")


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is the file or pipe this process's standard output writes to."""
    try:
        there, ours = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):  # (nothing there, or stdout closed)
        return False
    return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)


def plot_targets(plot: Path | None, count: int) -> list[Path | None]:
    """Where the figures of ``count`` queries go: ``plot`` itself for one, else numbered
    files beside it (``fig-0.png``, ``fig-1.png``, …); ``/dev/null`` takes them all, and
    another device or pipe only one (several were written over each other)."""
    if plot is None:
        return [None] * count
    if count == 1 or os.path.abspath(plot) == os.devnull:
        return [plot] * count
    if is_stream(plot):  # each figure written over the last: one PNG, the last photo's
        raise VitrineError(f"--plot {plot} holds one figure and {count} photos were given; "
                           "name a file (fig.png: fig-0.png, fig-1.png, …) or search one "
                           "photo.")
    targets = [plot.with_name(f"{plot.stem}-{i}{plot.suffix}") for i in range(count)]
    for target in targets:
        _refuse_stdout(target)
    return targets


def _photo_places(store, catalogue: Path | None, need_links: bool
                  ) -> tuple[set[Path], dict[Path, str]]:
    """The real folders that `vitrine index` reads ``store``'s photos from: each folder
    holding one, and each folder a link inside ``catalogue`` leads to (a category folder
    that is a link elsewhere, its sub-folders too, with products or not yet); and with
    ``need_links``, the real path of each photo that is a link, with the link. Reads every
    product's photo path and lists the catalogue's folders: only a command with --plot."""
    roots: set[Path] = set()
    linked: dict[Path, str] = {}
    walked: set[Path] = set()
    for folder in {os.path.dirname(image) for image in store.images().values()}:
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            roots.add(Path(folder).resolve())
            step = Path(folder)  # up to the catalogue: the links on the way
            while catalogue is not None and step != catalogue and step not in walked \
                    and step.is_relative_to(catalogue):
                walked.add(step)
                if step.is_symlink():
                    roots.add(step.resolve())
                step = step.parent
            if need_links:
                with os.scandir(folder) as entries:
                    linked.update((Path(e.path).resolve(), e.path) for e in entries
                                  if e.is_symlink())
    if catalogue is not None:  # a linked folder no product is in yet (empty, or new)
        for top, folders, _ in os.walk(catalogue):  # (links not followed: listed)
            for name in folders:
                if os.path.islink(os.path.join(top, name)):
                    with contextlib.suppress(OSError, RuntimeError):
                        roots.add(Path(top, name).resolve())
    return roots, linked


def check_plot_targets(targets: list[Path], photos: list[Path], rec) -> None:
    """Refuse, before any work, a figure that would be written over a photo to search (the
    next query then searched the figure), over a product's photo, or into the store's
    catalogue or upload folder or a folder it reads photos from (it replaced a product's
    photo, which the next `vitrine index` embedded; a new file there would be read as a
    product); also through the catalogue's links to photos and folders elsewhere. A device
    or pipe (/dev/null, /dev/fd/3) is written through, so none of this concerns it."""
    from vitrine.store import upload_folder

    targets = [t for t in targets if not is_stream(t)]
    if not targets:
        return
    catalogue = rec.store.catalog_folder()
    folders = [Path(f).resolve() for f in (catalogue,
                                           upload_folder(rec.store, rec.settings.upload_dir))
               if f is not None]
    roots, linked = _photo_places(rec.store, catalogue and Path(catalogue),
                                  any(t.exists() for t in targets))
    for target in targets:
        try:
            real = target.resolve()
            # where the figure goes when ``target`` is a link: the link's own place (the
            # figure replaces it; a link inside the catalogue put a new photo there)
            place = target.parent.resolve() / target.name
        except (OSError, RuntimeError):  # a loop of links (RuntimeError on Python 3.11-12)
            raise VitrineError(f"--plot {target} is a link that leads to no file (a loop of "
                               "links); name a file.") from None
        for photo in photos:
            if Path(photo).resolve() in (real, place) or (
                    target.exists() and Path(photo).exists() and os.path.samefile(target, photo)):
                raise VitrineError(f"--plot {target} is the photo {photo}; name another file "
                                   "for the figure.")
        if inside := next((f for f in folders
                           if real.is_relative_to(f) or place.is_relative_to(f)), None):
            raise VitrineError(f"--plot {target} is inside {inside}, the store's photos; name "
                               "a file elsewhere for the figure.")
        if link := linked.get(real) or linked.get(place):
            raise VitrineError(f"--plot {target} is a product's photo (the catalogue's link "
                               f"{link} leads to it); name another file for the figure.")
        if inside := next((f for f in roots
                           if real.is_relative_to(f) or place.is_relative_to(f)), None):
            raise VitrineError(f"--plot {target} is inside {inside}, a folder the store's "
                               "photos are read from; name a file elsewhere for the figure.")


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


def save_plot(image, title, matches, target: Path, quiet: bool, max_pixels: int) -> None:
    from vitrine.plots import plot_recommendations

    plot_recommendations(image, title, matches, target, max_pixels)
    if not quiet:
        out.print(f"Figure saved to {target}")


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))  # (Windows has no SIGHUP)
_terminated: int | None = None
"""The signal that stopped the command (SIGTERM, SIGHUP), if one did."""


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``timeout``, ``kill``, a container stopping) or SIGHUP (the terminal closed)
    as a Ctrl+C: the same clean-up runs (partial model folders, store writes, a file being
    written), then the process ends by the signal. A second one (a shell passes SIGHUP on,
    then the terminal sends its own) does not cut that clean-up short."""
    global _terminated
    if _terminated is not None:
        return
    _terminated = signum
    raise KeyboardInterrupt


def stop_signals() -> list[int]:
    """The stop signals this process takes (SIGTERM, SIGHUP): not one it was started with
    ignored (``nohup vitrine index …`` must outlive its terminal)."""
    return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


def _stopped() -> None:
    """Say why the command stopped early, and end as such a stop does: exit status 130 for
    Ctrl+C; for SIGTERM death by the signal itself once cleaned up (a shell sees 143, and
    a service manager a clean stop, as before)."""
    # (a closed terminal, after SIGHUP; a reader gone, which Rich ends with SystemExit(1):
    # `vitrine serve 2>&1 | head -1` stopped by Ctrl+C ended with 1, not 130, helper-163)
    with contextlib.suppress(OSError, ValueError, SystemExit):
        err.print("interrupted." if _terminated is None else "terminated.")
    if _terminated is not None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe, say
                stream.flush()
        signal.signal(_terminated, signal.SIG_DFL)
        signal.raise_signal(_terminated)
    sys.exit(130)


def utf8_mode() -> None:
    """Go on in Python's UTF-8 mode, starting the command again in it where needed (the
    entry point calls it, before the command runs; never in another program's process).

    Under a locale whose encoding is not UTF-8 (``LANG=pt_BR.ISO-8859-1``, or ``LC_ALL=C``
    with ``PYTHONUTF8=0``) Python reads file names and arguments in that encoding: the photos
    of a catalogue indexed under UTF-8 then read as other products, and ``index`` removed and
    re-added every one whose name has an accent, under garbled ids. The new process gets the
    same bytes as arguments and environment (they go back through the codec they came
    from); what it prints to the terminal stays in the terminal's encoding, with what that
    cannot show escaped."""
    if (sys.flags.utf8_mode or os.name != "posix"
            or codecs.lookup(sys.getfilesystemencoding()).name == "utf-8"):
        return
    if not sys.executable or "utf8" in sys._xoptions:  # started again, still not UTF-8
        sys.stderr.write(
            f"error: this locale's file name encoding is {sys.getfilesystemencoding()}, not "
            "UTF-8, and Python's UTF-8 mode did not take; run Vitrine under a UTF-8 locale "
            "such as LANG=C.UTF-8.\n")
        sys.exit(2)
    env = dict(os.environ, PYTHONUTF8="1")
    terminal = getattr(sys.stdout, "encoding", None) or "utf-8"  # (None: stdout closed)
    env.setdefault("PYTHONIOENCODING", f"{terminal}:backslashreplace")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    os.execve(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]], env)


def _closed_stdio() -> None:
    """A standard stream the process was started without (``>&-``, some daemonizers and
    init systems) is /dev/null: Python left it None, and the first write or flush was an
    AttributeError traceback (uvicorn's log set-up another)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        with contextlib.suppress(OSError):
            os.fstat(fd)
            continue  # (the descriptor is open: Python's stream alone is missing)
        null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _printable_stdio() -> None:
    """A terminal that cannot show a character (PYTHONIOENCODING=ascii, a Latin-1 console)
    gets it escaped, not a UnicodeEncodeError halfway through a table."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def _output_failed(exc: OSError) -> bool:
    """Whether ``exc`` is stdout failing (a full disk under ``> file``, a closed pipe): the
    failed write was the ``out`` console's, :func:`print_json`'s or the final flush. If so
    stdout is pointed at /dev/null, so that Python's own flush at exit does not fail again."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    frame = tb.tb_frame
    if not (frame.f_locals.get("self") is out
            or frame.f_code in (print_json.__code__, run_app.__code__)):
        return False
    stdout_to_null()
    return True


def stdout_to_null() -> None:
    """Point stdout at /dev/null: its reader is gone (a closed pipe) or its disk full, and
    every later write (Python's flush at exit, a server's access log) would fail again."""
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def _refused(exc: BaseException) -> None:
    """End with one sentence and status 2 if ``exc`` is memory or a thread refused."""
    sentence = refused_sentence(exc)
    if sentence is not None:
        sys.stderr.write(f"error: {sentence}\n")
        sys.exit(2)


def run_app(app: typer.Typer) -> None:
    """Run ``app``, turning user errors into one sentence and exit status 2, and Ctrl+C,
    SIGTERM or SIGHUP into a clean stop."""
    taken = stop_signals()
    for stopping in taken:
        signal.signal(stopping, _terminate)
    try:
        _run_app(app)
    finally:
        # The command has finished and said so, or said its error; Python's shutdown
        # (torch's takes a second or more) must not turn a Ctrl+C or SIGTERM meanwhile into a
        # traceback ("Exception ignored in atexit callback") or a silent exit 130.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stopping in taken:
            signal.signal(stopping, signal.SIG_DFL)


MIN_ADDRESS_SPACE = 768 << 20
"""The least address space (``ulimit -v``) a command starts with: FAISS's library (its
OpenBLAS) crashed the process as it loaded under about 550 MB (SIGSEGV, status 139, not a
word said); one sentence instead. Above it, memory refused later is said as such."""


def _address_space_refused() -> None:
    """Refuse, in one sentence, an address space under :data:`MIN_ADDRESS_SPACE` (its help
    and version aside)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY or soft >= MIN_ADDRESS_SPACE or not sys.argv[1:] or any(
            arg in ("--help", "--version") for arg in sys.argv[1:]):  # (no argument: help)
        return
    raise VitrineError(f"this process may use {soft >> 20} MB of address space (ulimit -v), "
                       f"and Vitrine's libraries need {MIN_ADDRESS_SPACE >> 20} MB at the "
                       "least to load; give it more (ulimit -v unlimited, or the container's "
                       "memory limit).")


def _run_app(app: typer.Typer) -> None:
    """:func:`run_app` with the stop signals taken."""
    _closed_stdio()
    _printable_stdio()
    try:
        try:
            _address_space_refused()
            status = app(standalone_mode=False)
        except Exception:
            if _terminated is not None:  # stopped by a signal, and then the clean-up failed
                _stopped()  # (a closed terminal: the progress bar's last write gets EIO)
            raise
        sys.stdout.flush()  # a failed write says so here, not as a traceback at exit
        if status == 130:  # Typer turned Ctrl+C into this status itself
            _stopped()
        sys.exit(status if isinstance(status, int) else 0)
    except VitrineError as exc:  # (a file name it holds may carry an ESC or a line break)
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        sys.exit(2)
    except sqlite3.DatabaseError as exc:  # a page damaged after the store was opened
        damaged = "malformed" in str(exc) or "not a database" in str(exc)
        sys.stderr.write(f"error: the store's database failed ({exc})" + (
            "; restore vitrine.sqlite from a backup, or index into a new --store"
            if damaged else "") + ".\n")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        _stopped()
    except OSError as exc:
        if not _output_failed(exc):
            _refused(exc)
            if isinstance(exc, PermissionError):  # (a folder or file given, or one a setting
                # names, that this user may not read or write: not a bug)
                where = one_line(str(exc.filename)) if exc.filename else "a file"
                sys.stderr.write(f"error: {where}: {exc.strerror or 'permission denied'}; "
                                 "give this user access there, or run as its owner.\n")
                sys.exit(2)
            if exc.errno == errno.ENAMETOOLONG and exc.filename:  # a path given (--out, a
                # store) with a name longer than the file system takes: not a bug
                long = max(len(os.fsencode(part)) for part in Path(exc.filename).parts)
                sys.stderr.write(f"error: {one_line(str(exc.filename))}: {exc.strerror}; " + (
                    "a file or folder name takes at most 255 bytes here.\n" if long > 255
                    else "the whole path is longer than this system takes.\n"))
                sys.exit(2)
            raise
        if exc.errno == errno.EPIPE:  # a reader that stopped (`| head`): no word, and the
            sys.exit(1)  # status rich gives when its own write meets the closed pipe
        sys.stderr.write(f"error: cannot write the output: {exc.strerror or exc}.\n")
        sys.exit(2)
    except (MemoryError, RuntimeError, ImportError) as exc:
        _refused(exc)
        raise
    except Exception as exc:
        # usage errors: click's ClickException, or the copy of it that newer Typer bundles
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if any(c.__name__ == "MilvusException" for c in type(exc).__mro__):  # (or one of its
            # kinds; pymilvus is an extra: not imported) a full disk under Milvus Lite, a
            # server gone: pymilvus's traceback
            said = " ".join(str(getattr(exc, "message", exc)).split())  # (one line)
            sys.stderr.write(f"error: the Milvus store failed ({said}); run the command "
                             "again once that is mended (a copy or an index goes on where "
                             "it stopped).\n")
            sys.exit(2)
        raise


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
