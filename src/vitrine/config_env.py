"""The environment's side of the settings: the default cache folder (XDG), a list setting's
text, a variable's text as set, a setting's name in the environment, a variable set twice in
different case, the secrets a refusal does not repeat (:func:`vitrine.config.load_settings`
reads the settings; none of this needs them)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vitrine`` (the XDG base directory spec; a relative value is ignored,
    as the spec says), else ``~/.cache/vitrine``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "vitrine"
    try:
        return Path("~/.cache/vitrine").expanduser()
    except RuntimeError:  # no home folder (no HOME, a user id without a passwd entry in a
        # container): every command stopped with a traceback, also those needing no cache
        try:
            temporary = tempfile.gettempdir()
        except OSError:  # no writable temporary folder either (a read-only root file system):
            # the same traceback; a cache there is said unwritable when one is needed
            temporary = "/tmp"
        return Path(temporary) / f"vitrine-cache-{os.getuid()}"


def matplotlib_folder() -> None:
    """Give matplotlib a folder for its settings and font cache under Vitrine's cache folder
    (:func:`default_cache_dir`, else ``vitrine-cache-UID`` in the temporary folder) where its
    own cannot be written (a service's user whose home is /nonexistent): every command that
    drew a figure printed matplotlib's two warnings about MPLCONFIGDIR, and each run built its
    font cache again in a new temporary folder. A MPLCONFIGDIR of the user's is kept. Called
    by :mod:`vitrine.plots` before matplotlib is imported (it reads its folder then)."""
    if os.environ.get("MPLCONFIGDIR") or _matplotlib_own_writable():
        return
    folders = [default_cache_dir()]
    with contextlib.suppress(OSError):  # (none writable: matplotlib says so itself)
        folders.append(Path(tempfile.gettempdir()) / f"vitrine-cache-{os.getuid()}")
    for folder in folders:
        if _writable_folder(folder / "matplotlib", private=True):
            os.environ["MPLCONFIGDIR"] = str(folder / "matplotlib")
            return


def _matplotlib_own_writable() -> bool:
    """Whether the folders matplotlib keeps its settings and cache in without MPLCONFIGDIR
    can be written, as it checks them."""
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            own = [Path(os.environ.get(name) or Path.home() / default, "matplotlib")
                   for name, default in (("XDG_CONFIG_HOME", ".config"),
                                         ("XDG_CACHE_HOME", ".cache"))]
        else:
            own = [Path.home() / ".matplotlib"]
    except RuntimeError:  # (no home: matplotlib makes a temporary folder, and says so)
        return False
    return all(map(_writable_folder, own))


def _writable_folder(path: Path, private: bool = False) -> bool:
    """Whether ``path`` is, or could be made, a folder this process writes to, as matplotlib
    checks its own; with ``private``, also one only this user can write to and its folder (a
    folder in /tmp another user made first would give matplotlib their settings)."""
    try:
        if private:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.mkdir(parents=True, exist_ok=True, mode=0o700 if private else 0o777)
        if not (path.is_dir() and os.access(path, os.W_OK)):
            return False
        if private:
            return all(st.st_uid == os.getuid() and not st.st_mode & 0o022
                       for st in (os.stat(path), os.stat(path.parent)))
        return True
    except OSError:
        return False


def _str_list(value):
    """``VITRINE_X=a, b`` or ``VITRINE_X=["a", "b"]`` → ``["a", "b"]``; empty → ``[]``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc.msg}); write a,b or [\"a\", \"b\"]"
                             ) from None
    return [part.strip() for part in text.split(",") if part.strip()]


SECRET_SETTINGS = frozenset({"api_key", "milvus_token"})
"""Settings whose value a refusal does not repeat: it goes to the server's log."""


def _shown(field: str, name: str, given: object) -> str:
    """``=value`` of a refused setting, as the refusal repeats it; nothing for a secret."""
    return "" if field in SECRET_SETTINGS else f"={env_value(name, given)!r}"


def _env_name(field: str) -> str:
    return "VITRINE_" + field.upper() if field else "VITRINE_*"


def _check_set_once() -> None:
    """Refuse a VITRINE_ variable set twice in different case (``VITRINE_BATCH_SIZE=4
    vitrine_batch_size=0``): which one counted depended on the environment's order, and a
    refusal quoted the other's value (helper-230)."""
    from vitrine.errors import VitrineError

    seen: dict[str, str] = {}
    for key in os.environ:
        upper = key.upper()
        if upper.startswith("VITRINE_"):
            if upper in seen:
                raise VitrineError(f"settings {seen[upper]} and {key} are the same setting, "
                                   "set twice in different case; unset one of them.")
            seen[upper] = key


SCRIPT_VARIABLES = frozenset({"VITRINE_SHARED", "VITRINE_EXTRAS", "VITRINE_TORCH_SPEC",
                              "VITRINE_CONSTRAINTS", "VITRINE_CHROMIUM"})
"""VITRINE_ variables that are no settings: the set-up and test scripts' own."""


def env_value(name: str, default):
    """The environment's text for ``name`` (matched without case, as pydantic-settings
    does), else ``default``."""
    for key, value in os.environ.items():
        if key.upper() == name:
            return value
    return default
