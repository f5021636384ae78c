"""``--plot`` of ``search`` and ``similar``: the figure's file checked before any work (a
folder, its format, standard output or input, a descriptor not open for writing, a photo of
the store or a folder it reads photos from), the numbered files of several photos, and the
figure saved."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path

from vitrine.cli_support import out
from vitrine.errors import VitrineError
from vitrine.files import descriptor, is_stream


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


def save_plot(image, title, matches, target: Path, quiet: bool, max_pixels: int) -> None:
    from vitrine.plots import plot_recommendations

    plot_recommendations(image, title, matches, target, max_pixels)
    if not quiet:
        out.print(f"Figure saved to {target}")
