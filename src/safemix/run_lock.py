"""One ``safemix run`` per run directory at a time.

``RUN_DIR/.lock`` carries an advisory lock (``flock``) for as long as a run works in the directory, and names
its holder (process id, host, start time). A second run finds the lock taken and stops with an input error that
names the holder, before it reads or writes anything. The lock belongs to the open file, so the kernel drops it
when the holder ends in any way, ``kill -9`` included: a lock file left behind by a killed run is simply taken
over by the next run (there is no stale lock to clean up). The run directory must be on a filesystem whose
locks work across the machines that share it (local disks; NFS v4 and cluster filesystems with locking on).
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from safemix.errors import InputError

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the duration of the block (the directory is created if missing).

    Raises:
        InputError: another process holds the lock; the message names it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "holder unknown"
            raise InputError(f"{run_dir}: another safemix run is using this run directory ({holder}); wait for it "
                             "to finish or stop it, then run again") from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        yield
