"""On-disk caches: a small SQLite key -> bytes store, and the score cache built on it.

SQLite gives atomic commits and safe concurrent readers, so a run killed mid-way keeps every batch it
committed and a rerun scores only what is missing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

_SQLITE_VARS_PER_QUERY = 500


class KeyValueStore:
    """A persistent mapping from text keys to bytes, committed once per ``put_many``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Return the stored values of those ``keys`` that are present."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), _SQLITE_VARS_PER_QUERY):
            chunk = wanted[start : start + _SQLITE_VARS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT key, value FROM kv WHERE key IN ({marks})", chunk).fetchall())
        return found

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Store ``items`` (replacing existing keys) in one transaction."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", list(items.items()))

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def default_cache_root() -> Path:
    """``$SAFEMIX_SCORE_CACHE`` or ``~/.cache/safemix/scores``: where score and embedding caches live."""
    return Path(os.environ.get("SAFEMIX_SCORE_CACHE") or Path.home() / ".cache" / "safemix" / "scores")
