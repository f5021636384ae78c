"""A process whose environment cannot be written: no temporary folder (a container's
read-only root file system, ProtectSystem=strict), and no home either. Each is one
``error:`` sentence with status 2, or no error at all where nothing needs the folder,
never a traceback."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

NO_TEMP = "No usable temporary directory found in ['/tmp', '/var/tmp', '/usr/tmp', '/']"


def _no_temporary_folder(monkeypatch) -> None:
    """What Python does when TMPDIR, /tmp, /var/tmp and the current folder cannot be
    written: ``gettempdir`` (and ``mkdtemp``, ``TemporaryDirectory`` through it) raises."""

    def none(*args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, NO_TEMP)

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(tempfile, "gettempdir", none)


def test_settings_without_a_home_or_a_temporary_folder(monkeypatch):
    """Every command, `info` too, stopped with gettempdir's traceback while choosing the
    default cache folder (no HOME, a user id without a passwd entry)."""
    import pwd

    from vitrine.config import load_settings

    def nobody(uid):
        raise KeyError(uid)

    for name in ("VITRINE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", nobody)
    _no_temporary_folder(monkeypatch)
    assert load_settings().cache_dir == Path("/tmp") / f"vitrine-cache-{os.getuid()}"


def test_an_unwritable_cache_without_a_temporary_folder_is_one_sentence(settings, tmp_path,
                                                                        monkeypatch):
    """The ONNX export's fallback to a temporary folder built its error message with
    gettempdir(), which raised again: `index`, `search` and `serve` (at its start) ended in
    a traceback, status 1."""
    import torch

    from vitrine.embed import Embedder
    from vitrine.engines import EngineError, make_engine

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    (tmp_path / "afile").write_text("x")
    unwritable = settings.model_copy(update={"engine": "onnx",
                                              "cache_dir": tmp_path / "afile" / "cache"})
    _no_temporary_folder(monkeypatch)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    with pytest.raises(EngineError, match=r"cannot create the model cache folder .* No "
                                          r"temporary folder can hold it either .*"
                                          r"VITRINE_ENGINE=torch"):
        make_engine(unwritable, net, manifest, 32)


def test_a_library_that_needs_a_temporary_folder_is_one_sentence(cli_here, small_store,
                                                                 monkeypatch):
    """matplotlib (its config folder when HOME's cannot be written) and torch (its compile
    cache) raise as they load: `--plot`, `train` and the demo ended in their traceback."""
    import vitrine.store

    def matplotlib_loading(*args, **kwargs):
        try:
            tempfile.mkdtemp(prefix="matplotlib-")
        except OSError as exc:  # (matplotlib's own words)
            raise OSError("Matplotlib requires access to a writable cache directory, but "
                          "there was an issue with the default path, and a temporary "
                          "directory could not be created; set the MPLCONFIGDIR environment "
                          "variable to a writable directory") from exc

    _no_temporary_folder(monkeypatch)
    monkeypatch.setattr(vitrine.store, "store_for", matplotlib_loading)
    proc = cli_here("info", "--store", small_store, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: no temporary folder can be written here (TMPDIR, /tmp, /var/tmp, the current "
        "folder: a read-only file system?); set TMPDIR to a writable folder."]


def test_train_without_a_temporary_folder_is_refused_before_reading_photos(
        cli_here, weights_path, tmp_path, monkeypatch):
    """torch needs one as `train` makes its optimiser, after every photo was read and
    embedded through the frozen layers (minutes on a large catalogue), and matplotlib for the
    report after training: said before the catalogue is read (here an empty folder, which
    would be its own error)."""
    (tmp_path / "catalog").mkdir()
    _no_temporary_folder(monkeypatch)
    proc = cli_here("train", tmp_path / "catalog", "--out", tmp_path / "model",
                    env_extra={"VITRINE_WEIGHTS": weights_path}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith("error: no temporary folder can be written")
    assert not (tmp_path / "model").exists()


def test_an_orphan_photo_this_user_may_not_delete_does_not_stop_index(small_catalog,
                                                                      embedder, tmp_path,
                                                                      monkeypatch, caplog):
    """A server run once as another user (root) made STORE/uploads, and left a photo no
    product names (killed between saving it and storing its product): every later `index`
    by the shop's own user stored its products, then stopped with status 2 at that photo,
    before the duplicate search and the search index, and said nothing of what it did."""
    import hashlib

    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    store = open_store(tmp_path / "store", create=True)
    orphan = tmp_path / "store" / "uploads" / (hashlib.sha256(b"lost").hexdigest() + ".jpg")
    orphan.parent.mkdir()
    orphan.write_bytes(b"lost")
    real_unlink = Path.unlink

    def denied(self, *args, **kwargs):  # (CI runs as root, which chmod does not stop)
        if self.parent == orphan.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", denied)
    with caplog.at_level("WARNING", logger="vitrine.indexer"):
        report = index_catalog(small_catalog, store, embedder, show_progress=False,
                               uploads=orphan.parent)
    assert report.indexed == store.count() == 48
    assert report.orphan_photos == 0 and orphan.exists()
    assert report.duplicates_searched and report.index_unsaved is None
    assert "1 file(s) no product uses in" in caplog.text
    assert "could not be deleted (Permission denied)" in caplog.text
    store.close()


def test_figures_with_a_home_that_cannot_be_written_say_nothing_of_matplotlib(tmp_path):
    """A service's user whose home is /nonexistent: every command that drew a figure
    (`similar --plot`, `train`, the demo) printed matplotlib's two warnings about
    MPLCONFIGDIR, and built its font cache again each run. Its folder is made under Vitrine's
    cache folder (here the temporary folder's); a MPLCONFIGDIR of the user's is kept."""
    import subprocess
    import sys

    (tmp_path / "home").write_text("not a folder")  # (root too cannot write under it)
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))
    show = "import os, vitrine.plots; print(os.environ.get('MPLCONFIGDIR'))"
    for _ in range(2):  # (the second run finds the folder the first made)
        proc = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == ""
        mine = tmp_path / "tmp" / f"vitrine-cache-{os.getuid()}" / "matplotlib"
        assert proc.stdout.strip() == str(mine) and mine.is_dir()
        assert mine.stat().st_mode & 0o777 == 0o700
    theirs = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True,
                            env={**env, "MPLCONFIGDIR": str(tmp_path / "theirs")}, timeout=120)
    assert theirs.stdout.strip() == str(tmp_path / "theirs") and theirs.stderr == ""


@pytest.mark.parametrize("given", ["matplotlib", "vitrine", "group-writable"])
def test_a_matplotlib_folder_another_user_could_write_is_not_taken(tmp_path, monkeypatch,
                                                                    given):
    """A matplotlib folder under Vitrine's cache folder that another user owns (or its
    folder: a /tmp one they made first), or that others may write to, would give matplotlib
    their settings and font cache: it is passed over for the next (the temporary folder's
    ``vitrine-cache-UID``), where the same folder of this user's own is taken."""
    from vitrine import config_env

    def chosen() -> Path:
        monkeypatch.setenv("MPLCONFIGDIR", "")  # (unset for the call, restored after it)
        config_env.matplotlib_folder()
        return Path(os.environ["MPLCONFIGDIR"])

    (tmp_path / "no-home").write_text("not a folder")  # (matplotlib's own cannot be made)
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # Vitrine's: cache/vitrine
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cache = tmp_path / "cache" / "vitrine" / "matplotlib"
    cache.mkdir(parents=True, mode=0o700)
    (tmp_path / "cache" / "vitrine").chmod(0o700)
    assert chosen() == cache  # (this user's own: taken)

    other = os.getuid() + 1000
    if given == "group-writable":
        cache.chmod(0o770)
    elif os.geteuid() == 0:
        os.chown(cache if given == "matplotlib" else cache.parent, other, -1)
    else:  # (only root gives a folder away: the owner stat reports is another's)
        mine, real = cache if given == "matplotlib" else cache.parent, os.stat

        def stat(path, *args, **kwargs):
            found = real(path, *args, **kwargs)
            if Path(path) != mine:
                return found
            fields = list(found)
            fields[4] = other  # st_uid
            return os.stat_result(fields)
        monkeypatch.setattr(os, "stat", stat)
    fallback = tmp_path / "tmp" / f"vitrine-cache-{os.getuid()}" / "matplotlib"
    assert chosen() == fallback and fallback.is_dir()
    assert fallback.stat().st_mode & 0o777 == 0o700
