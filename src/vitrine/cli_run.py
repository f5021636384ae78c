"""The process around the commands: Python's UTF-8 mode, the standard streams (closed at
the start, a character the terminal cannot show, a reader gone or a disk full), the stop
signals (Ctrl+C, SIGTERM, SIGHUP) and the errors a user can cause said in one sentence with
exit status 2."""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import signal
import sqlite3
import sys
from pathlib import Path

import typer

from vitrine.cli_support import err, out, print_json
from vitrine.display import one_line
from vitrine.errors import VitrineError, refused_sentence

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


def no_temporary_folder(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised from, Python's "No usable temporary directory"
    (``tempfile``: TMPDIR, /tmp, /var/tmp and the current folder all unwritable, a container's
    read-only root file system). torch (its compile cache, as ``train`` makes its optimiser)
    and matplotlib (its config folder, when HOME's cannot be written either) ask for one as
    they load: a traceback, status 1."""
    for _ in range(8):  # (the chain of causes is short; a cycle is not followed for good)
        if exc is None:
            return False
        if isinstance(exc, FileNotFoundError) and exc.filename is None and \
                "No usable temporary directory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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
            if no_temporary_folder(exc):  # torch's and matplotlib's caches as they load
                sys.stderr.write("error: no temporary folder can be written here (TMPDIR, "
                                 "/tmp, /var/tmp, the current folder: a read-only file "
                                 "system?); set TMPDIR to a writable folder.\n")
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
