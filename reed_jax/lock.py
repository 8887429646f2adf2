"""One trainer per workdir: an exclusive `fcntl.flock` on `<workdir>/.lock`.

Process 0 of a run holds the lock from start to exit; a second trainer on the same workdir stops
at once with an error naming the holder (pid, host, start time) and the workdir. The kernel drops
the lock when its holder dies (kill -9 included), so a stale lock file never blocks a relaunch.
Other processes of a multi-host run do not lock: process 0 speaks for the run.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time


class WorkdirBusy(RuntimeError):
    """Another process holds this workdir's lock."""


class WorkdirLock:
    """Context manager holding the workdir's lock (a no-op when `enabled` is False)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.workdir = workdir
        self.path = os.path.join(os.path.abspath(workdir), ".lock")
        self.enabled, self._fh = enabled, None

    def __enter__(self) -> WorkdirLock:
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except ValueError:
                holder = {}
            fh.close()
            raise WorkdirBusy(
                f"workdir {self.workdir!r} is in use by another run (pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}; lock {self.path}): stop it "
                f"first, or use another --workdir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> bool:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        return False
