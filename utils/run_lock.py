"""EXP/.lock: one run at a time in an experiment directory, held with the kernel's lock (flock).

A run holds an exclusive flock on EXP/.lock while it goes. The kernel drops it when the run ends,
however it ends (SIGKILL and crashes too), so the file a killed run leaves behind is free at once:
no lock is ever judged stale. The file names its holder (host, pid, start, command) for the message
of a run that is refused. The holder deletes the file as it ends, while it still holds the flock;
a taker checks, once its flock succeeded, that the path still names the file it locked, and tries
again when not, so a release racing a take never gives two holders.
"""
import fcntl
import json
import os
import sys
import time
import weakref
from pathlib import Path

from utils.errors import UserError
from utils.io import host, write_error

_HELD = weakref.WeakSet()  # the locks this process holds


def _drop_in_child():
    """A forked child (a DataLoader worker) keeps no share of its parent's locks: closing its copy of the
    descriptor leaves the parent's flock as it is, and the lock goes when the parent does."""
    for lock in list(_HELD):
        lock._file.close()
        lock._file = None
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class RunLock:
    """EXP/.lock of an experiment directory: acquire() takes it (held while this object lives, until release())
    or names the run that holds it."""

    def __init__(self, root):
        self.root = Path(root)
        self.path = self.root / '.lock'
        self._file = None  # the locked file while this object holds the lock

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def holder(self):
        """The lock file's record; None without a lock file, {} for a file that holds no record (yet)."""
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def check_free(self):
        """UserError when another run holds the lock now; takes nothing and writes nothing."""
        if self._file is not None:
            return
        try:
            f = open(self.path, 'rb')
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._unusable(e) from None
        with f:
            self._flock(f, fcntl.LOCK_SH)  # shared: checkers do not stand in each other's way

    def acquire(self):
        """Take the lock, or UserError naming the run that holds it."""
        if self._file is not None:
            return
        for _ in range(100):
            try:
                f = open(self.path, 'ab', buffering=0)
            except OSError as e:
                raise write_error(e, self.path) or self._unusable(e) from None
            try:
                self._flock(f, fcntl.LOCK_EX)
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            except BaseException:
                f.close()
                raise
            if not same:  # its holder deleted it as it ended: take the file that is there now
                f.close()
                continue
            self._file = f
            _HELD.add(self)
            record = {'host': host(), 'pid': os.getpid(), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                      'command': ' '.join(sys.argv)}
            try:
                f.truncate(0)  # what a killed run wrote (appended writes land at the start once it is empty)
                f.write((json.dumps(record) + '\n').encode())
            except OSError as e:
                self.release()
                raise write_error(e, self.path) or e from None
            return
        raise UserError(f"could not take {self.path}: other runs keep taking it; try again, or use another "
                        f"--experiment_dir")

    def release(self):
        """Delete the lock file and give the lock back, if this object holds it (nothing otherwise)."""
        f, self._file = self._file, None
        if f is None:
            return
        _HELD.discard(self)
        with f:
            try:
                if os.path.samestat(os.fstat(f.fileno()), os.stat(self.path)):
                    self.path.unlink()
            except OSError:
                pass  # deleted by hand meanwhile: the next run makes a new one

    def _flock(self, f, kind):
        try:
            fcntl.flock(f.fileno(), kind | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy(self.holder()) from None
        except OSError as e:  # no locks on this file system
            raise self._unusable(e) from None
        if kind == fcntl.LOCK_SH:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _unusable(self, e):
        return UserError(f"{self.path} cannot be used as the lock of {self.root} ({e.strerror or e}); if no run "
                         f"uses {self.root}, delete it and start again, or use another --experiment_dir")

    def _busy(self, h):
        if not h or 'pid' not in h:
            who = "one that is starting"
        else:
            command = ' '.join(str(h.get('command', '')).split())
            command = command if len(command) <= 160 else command[:157] + '...'
            who = f"pid {h['pid']} on {h.get('host')}, started {h.get('started')}: {command}"
        return UserError(f"{self.root} is in use by another run ({who}); wait for it to end or stop it, or use "
                         f"another --experiment_dir")
