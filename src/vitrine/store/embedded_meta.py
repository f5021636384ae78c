"""The embedded store's records in its meta table (:class:`EmbeddedMeta`, a part of
:class:`vitrine.store.embedded.EmbeddedStore`): the model manifest (mirrored in
``manifest.json``), the catalogue records, the duplicate search's cache, and the catalogue
photos' hashes as the last ``vitrine index`` saw them."""

from __future__ import annotations

import json

from vitrine.errors import StoreError
from vitrine.files import write_whole
from vitrine.manifest import ModelManifest
from vitrine.photo_hashes import Signature
from vitrine.store.sqlite_db import MANIFEST_NAME


class EmbeddedMeta:
    """The meta table's records of an :class:`~vitrine.store.embedded.EmbeddedStore`."""

    # ---- manifest -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def manifest(self) -> ModelManifest | None:
        value = self._meta("manifest")
        return ModelManifest.read(value, self.root) if value else None

    def set_manifest(self, manifest: ModelManifest) -> None:
        blob = json.dumps(manifest.as_dict(), sort_keys=True)
        try:  # (first: written after the database's copy, a rerun never wrote it; on disk
            # before its rename, as every file written whole: a power cut left it empty)
            write_whole(self.root / MANIFEST_NAME,
                        (json.dumps(manifest.as_dict(), indent=2) + "\n").encode())
        except OSError as exc:  # (a full disk: a traceback)
            raise StoreError(f"cannot write {MANIFEST_NAME} in the store {self.root} "
                             f"({exc.strerror or exc}); make room or give write access there, "
                             "then run the command again.") from None
        with self._transaction():
            self._set_meta("manifest", blob)

    def _set_or_forget(self, key: str, value: str | None) -> None:
        with self._transaction(new_generation=False):  # the vectors and index stay as they are
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._set_meta(key, value)

    def duplicate_cache(self) -> bytes | None:
        value = self._meta("duplicates")
        return value if isinstance(value, bytes) else None

    def set_duplicate_cache(self, data: bytes) -> None:
        """Save the duplicate cache (a BLOB in the meta table) and count the save in the
        store's write mark (:meth:`~vitrine.store.embedded.EmbeddedStore.write_mark`): an
        API write saves its photo counts after its products, so another process that read
        the cache between the two kept the old counts for ``vitrine.copies.KEPT_S``."""
        with self._transaction(new_generation=False):
            self._set_meta("duplicates", data)
            self._bump("duplicates_saved")

    def photo_hashes(self) -> dict[str, tuple[Signature, str]]:
        """Catalogue photo path → ((size, mtime_ns, ctime_ns, inode), sha256) as the last
        ``vitrine index`` saw them (``vitrine.photo_hashes``)."""
        rows = self.db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, sha FROM photo_hashes")
        return {path: ((size, mtime, ctime, ino), sha)
                for path, size, mtime, ctime, ino, sha in rows}

    def set_photo_hashes(self, fresh: dict[str, tuple[Signature, str]],
                         keep: set[str] | None = None) -> None:
        """Remember ``fresh`` hashes; with ``keep``, forget the photos not in it."""
        with self._transaction(new_generation=False):
            self.db.executemany(
                "INSERT OR REPLACE INTO photo_hashes(path, size, mtime_ns, ctime_ns, ino, sha) "
                "VALUES(?,?,?,?,?,?)", [(path, *sig, sha) for path, (sig, sha) in fresh.items()])
            if keep is not None:
                gone = [(path,) for (path,) in self.db.execute("SELECT path FROM photo_hashes")
                        if path not in keep]
                self.db.executemany("DELETE FROM photo_hashes WHERE path=?", gone)
