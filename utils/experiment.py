"""An experiment directory: its config, log, snapshots, validation masks and resume checkpoint.

    EXP/train_config.json                     every option of the run, plus fold and data paths
    EXP/logs/log.csv                          one row per epoch
    EXP/snapshots[/cycle_k|/swa]/epoch_{e}.loss_{l:.4f}.iout_{s:.3f}          model + how it was made
    EXP/snapshots[/cycle_k|/swa]/val_masks_<snapshot name>.npy     the fold's validation probabilities
    EXP/snapshots[/cycle_k|/swa]/val_masks_<snapshot name>.best.json   optimize_threshold.py's threshold, min_size
    EXP/snapshots/snapshot_ensemble.best.json the same for predict_se.py --th auto (the cycles' averaged masks)
    EXP/predictions/<snapshot name>[.tta_<set>].csv (+ .npy)   predict*.py's default output
    EXP/checkpoint.pth                        everything --resume needs, rewritten every epoch
    EXP/summary.json                          written when the run ends: best epoch, minutes, peak memory
    EXP/.lock                                 while a run goes: its host, pid and start (RunLock)

Snapshot names are written and parsed here only (snapshot_name, Snapshot.parse); see the
snapshots section for the one tie rule of "best".
"""
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError
from utils.io import (SNAPSHOT_FORMAT, TEMP_NAME, WriteError, guard, host, load_torch, release, save_json, save_npy,
                      save_rows, save_torch, temp_name, write_error)

LOG_COLUMNS = ['epoch', 'cycle', 'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr', 'seconds']


class Experiment:
    def __init__(self, root):
        self.root = Path(root)
        self.config_path = self.root / 'train_config.json'
        self.log_path = self.root / 'logs' / 'log.csv'
        self.checkpoint_path = self.root / 'checkpoint.pth'
        self.snapshot_root = self.root / 'snapshots'
        self.summary_path = self.root / 'summary.json'
        self.lock = RunLock(self.root)
        self._resumed_from = None  # (inode, mtime, size) of the checkpoint that check() saw

    def has_run(self):
        return any(p.exists() for p in (self.config_path, self.log_path, self.checkpoint_path, self.snapshot_root,
                                        self.summary_path))

    def check(self, resume, overwrite):
        """Refuse --resume/--overwrite choices that do not fit the directory, or a directory another
        run is using now; writes nothing."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        self.check_folder()
        self.lock.check_free()
        if resume:
            with contextlib.suppress(OSError):
                st = self.checkpoint_path.stat()
                self._resumed_from = (st.st_ino, st.st_mtime_ns, st.st_size)
            if not self.checkpoint_path.is_file():
                fix = ("it stopped before its first epoch ended; start it again with --overwrite" if self.has_run()
                       else "start it without --resume")
                raise UserError(f"nothing to resume in {self.root} (no checkpoint.pth); {fix}")
        elif self.has_run() and not overwrite:
            raise UserError(f"{self.root} already holds a run; pass --resume to continue it, --overwrite to "
                            f"start again (deletes its snapshots and logs), or another --experiment_dir")

    def check_folder(self):
        """The experiment directory is a folder (or not there yet), not a file: else one line saying so."""
        for p in (self.root, *self.root.parents):
            if p.exists():
                if not p.is_dir():
                    raise UserError(f"--experiment_dir {self.root}: {p} is a file, not a folder; pass a folder "
                                    f"(a new one, or one that train.py made)")
                return

    def prepare(self, resume, overwrite):
        """Take the directory's lock, check() again, then delete the run that --overwrite replaces and
        the temporary files that killed runs of this machine left.

        train.py calls this only once every input has been checked, so a mistake on the command
        line never costs the earlier run; the lock comes first, so a run that is still going never
        loses its files to another. release() gives the lock back (train.py: at exit, errors too).
        """
        seen = self._resumed_from
        with self.writing():
            self.root.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        try:
            self.check(resume, overwrite)
            if resume and seen is not None and self._resumed_from != seen:
                raise UserError(f"{self.checkpoint_path} changed while this run was starting (another run continued "
                                f"it meanwhile); start --resume again")
            if overwrite:
                for p in (self.snapshot_root, self.root / 'logs'):
                    shutil.rmtree(p, ignore_errors=True)
                for p in (self.config_path, self.checkpoint_path, self.summary_path):
                    p.unlink(missing_ok=True)
            if resume:
                self.summary_path.unlink(missing_ok=True)  # a resumed run is not finished until it ends again
            remove_stale_temporaries(self.root)
        except BaseException:
            self.release()
            raise

    def release(self):
        """Give back the lock that prepare() took (nothing when it holds none)."""
        self.lock.release()

    @contextlib.contextmanager
    def writing(self):
        """Within: a failed write (full disk, read-only folder) is one line with advice for a training run:
        what it wrote before is intact, and --resume goes on from its last checkpoint."""
        try:
            yield
        except WriteError as e:
            raise self._advise(e) from None
        except OSError as e:  # the folder and the lock: plain OSErrors
            w = write_error(e, e.filename or self.root)
            if w is None:
                raise
            raise self._advise(w) from None

    def _advise(self, e):
        again = ("continue with --resume (the last checkpoint and snapshots are intact)" if self.checkpoint_path.is_file()
                 else "start it again" + (" with --overwrite" if self.has_run() else ""))
        return e.advise(space=f"free space there (e.g. snapshots of runs you no longer need; --keep_snapshots K keeps "
                              f"only each cycle's K best) and {again}, or train in another --experiment_dir",
                        access=f"make {self.root} writable and {again}, or train in another --experiment_dir")

    def load_config(self):
        return read_config(self.config_path, needs=())

    def write_config(self, config):
        with self.writing():
            save_json(self.config_path, config)

    def snapshot_dir(self, cycle, cycles):
        if cycle == 'swa':
            return self.snapshot_root / 'swa'
        return self.snapshot_root / f'cycle_{cycle}' if cycles > 1 else self.snapshot_root

    def save_snapshot(self, model_state, config, epoch, cycle, metrics, val_probs):
        """Write a snapshot and its validation masks; returns the snapshot's path."""
        name = snapshot_name(epoch, metrics['val_loss'], metrics['val_score'])
        path = self.snapshot_dir(cycle, config['cycles']) / name
        masks = val_masks_path(path)
        had_masks = masks.exists()
        with self.writing():
            save_npy(masks, val_probs.astype('float16'))
            try:
                save_torch(path, {
                    'format': SNAPSHOT_FORMAT, 'model': model_state, 'arch': config['arch'], 'config': config,
                    'epoch': epoch, 'cycle': cycle, 'fold': config['fold'], 'metrics': metrics,
                    'val_augs': config['val_augs'], 'val_transforms': config['val_transforms'],
                })
            except BaseException:
                if not had_masks:  # masks without their snapshot would only take space on a full disk
                    masks.unlink(missing_ok=True)
                raise
        if config.get('keep_snapshots'):
            self.prune_snapshots(path.parent, config['keep_snapshots'])
        return path

    def prune_snapshots(self, folder, keep):
        """Delete all but the `keep` best snapshots of one folder (a cycle's), with their validation
        masks and threshold files; best by validation score, the later epoch on ties (as best_snapshot_of)."""
        snaps = sorted(snapshots_in(folder), key=lambda s: s.rank, reverse=True)
        for old in snaps[keep:]:
            for p in (old.path, old.masks, best_json_path(old.masks)):
                p.unlink(missing_ok=True)

    def write_log(self, rows):
        with self.writing():
            save_rows(self.log_path, LOG_COLUMNS, ([_cell(r.get(c)) for c in LOG_COLUMNS] for r in rows))

    def write_summary(self, summary):
        """Mark the run finished: what train.py reports at its end, as JSON."""
        with self.writing():
            save_json(self.summary_path, {**summary, 'finished': True})

    def is_finished(self):
        return self.summary_path.is_file()

    def save_checkpoint(self, state):
        with self.writing():
            save_torch(self.checkpoint_path, state)


def _cell(v):
    """A log value as text: numbers as Python writes them (floats round-trip exactly), None empty."""
    if v is None:
        return ''
    if hasattr(v, 'item'):  # numpy / torch scalars
        v = v.item()
    return repr(float(v)) if isinstance(v, float) else str(v)


def remove_stale_temporaries(root):
    """Delete the .NAME.tmpPID@HOST files (utils.io.atomic_path) that killed processes of this machine
    left under root.

    A pid means something only on its own machine: a file of another host (a folder shared over
    NFS) may be one that a live run there is writing, and is left alone; so are temporary files
    without a host (older versions), whose writer cannot be told.
    """
    for p in root.rglob('.*.tmp*'):
        m = TEMP_NAME.match(p.name)
        if m and m['host'] == host() and not _alive(int(m['pid'])):
            p.unlink(missing_ok=True)


def _alive(pid, started=None):
    """Whether process `pid` of this machine runs (a zombie does not); with `started` (its start time
    in clock ticks after boot, from /proc), whether it is still that process and not a later one that
    was given the same pid."""
    stat = _proc_stat(pid)
    if stat is not None:
        state, ticks = stat
        return state not in 'ZX' and (started is None or ticks == started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _proc_stat(pid):
    """(state letter, start time in clock ticks after boot) of a process, from Linux's /proc; None without it."""
    try:
        text = Path(f'/proc/{int(pid)}/stat').read_text()
    except (OSError, ValueError):
        return None
    fields = text.rsplit(')', 1)[-1].split()  # after the command name, which may hold spaces and ')'
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _boot_id():
    try:
        return Path('/proc/sys/kernel/random/boot_id').read_text().strip()
    except OSError:
        return None


class RunLock:
    """EXP/.lock: one run at a time in an experiment directory.

    The lock file holds the run's host, pid, process start and start time. It is made whole before
    it appears (written to a temporary file, then hard-linked to .lock, which fails when .lock
    exists): one atomic step on local disks and on NFS alike (old NFS lacks O_EXCL, some mounts
    keep flock local to each client), which never leaves a half-written lock behind a kill. A lock
    outlives a SIGKILL, so a lock whose run is gone (this host, and its pid ended, or now belongs
    to a later process, or the machine rebooted) is stale and taken over; one of another host
    cannot be judged from here and is never broken: the message says to delete it once that run is
    known to be gone. Takers of a stale lock on one host go one at a time (flock on the stale
    file), so exactly one of them wins.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.path = self.root / '.lock'
        self.token = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def holder(self):
        """The lock file's record; None without a lock file, {} for a file that is not a lock record."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return {}
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def check_free(self):
        """UserError when another run holds the lock now (a stale lock counts as free); takes nothing."""
        h = self.holder()
        if h is not None and not self._mine(h) and not self._stale(h):
            raise self._busy(h)

    def acquire(self):
        """Take the lock, or UserError naming the run that holds it."""
        if self.token is not None:
            return
        record = {'host': host(), 'pid': os.getpid(), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
                  'proc_start': (_proc_stat(os.getpid()) or (None, None))[1], 'boot_id': _boot_id(),
                  'token': uuid.uuid4().hex}
        for _ in range(20):
            if self._create(record):
                self.token = record['token']
                return
            h = self.holder()
            if h is None:  # released (or broken) since: try again
                continue
            if not self._stale(h):
                raise self._busy(h)
            self._break(h)
        raise UserError(f"could not take {self.path}: other runs keep taking it; try again, or use another "
                        f"--experiment_dir")

    def release(self):
        """Delete the lock if it is this object's (another run's lock is never touched)."""
        if self.token is not None and self._mine(self.holder() or {}):
            self.path.unlink(missing_ok=True)
        self.token = None

    def _mine(self, h):
        return self.token is not None and h.get('token') == self.token

    def _create(self, record):
        """Make the lock file whole from `record`; False when a lock file exists already."""
        tmp = temp_name(self.path)
        try:
            with open(tmp, 'w') as f:
                f.write(json.dumps(record) + '\n')
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(e, self.path) or e from None
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # mostly another run's lock; on NFS also a retried link of ours that had succeeded
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                    raise
                # No hard links on this file system: O_EXCL (atomic on local disks and NFSv3+) instead.
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, 'w') as f:
                    f.write(json.dumps(record) + '\n')
                return True
            # The link count tells whether .lock is this file, whatever link() reported.
            return os.stat(tmp).st_nlink == 2
        finally:
            tmp.unlink(missing_ok=True)

    def _stale(self, h):
        """Whether the run that wrote lock record `h` is gone for certain (only this host's can be told)."""
        if not h or h.get('host') != host() or not isinstance(h.get('pid'), int):
            return False
        boot = _boot_id()
        if h.get('boot_id') and boot and h['boot_id'] != boot:
            return True  # the machine restarted since
        return not _alive(h['pid'], h.get('proc_start'))

    def _break(self, h):
        """Delete the stale lock `h`, unless another taker of this host has replaced it meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            with contextlib.suppress(OSError):  # no lock service (some NFS mounts): the checks below still hold
                fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.path))
                if same_file and self.holder() == h:
                    self.path.unlink()
        finally:
            os.close(fd)

    def _busy(self, h):
        if not h:
            return UserError(f"{self.path} exists but is not a lock record; if no run uses {self.root}, delete it "
                             f"and start again")
        who = f"pid {h.get('pid')} on {h.get('host')}, started {h.get('started')}"
        if h.get('host') == host():
            return UserError(f"{self.root} is in use by another run ({who}); wait for it to end or stop it "
                             f"(kill {h.get('pid')}), or use another --experiment_dir")
        return UserError(f"{self.root} is in use by a run on another machine ({who}); wait for it to end; if that "
                         f"run is gone (its machine went down), delete {self.path}; or use another --experiment_dir")


# ---------------------------------------------------------------- snapshots: names, best-of, roots
#
# This section is the only place that writes or reads a snapshot's name; everything else asks it.
# The one tie rule: the best snapshot has the highest validation score (the iout_ part of the name,
# three decimals), and on equal scores the later epoch wins (it has trained longer on the same
# evidence). best_of, best_snapshot_of, best_per_cycle and prune_snapshots all follow it.

SNAPSHOT_NAME = re.compile(r'^epoch_(?P<epoch>\d+)\.loss_(?P<loss>-?(?:[\d.]+|nan|inf))\.iout_(?P<score>-?(?:[\d.]+|nan))$')
PREDICTIONS = 'predictions'
ENSEMBLE = 'snapshot_ensemble'


def snapshot_name(epoch, val_loss, val_score):
    """The file name of a snapshot: epoch_{e}.loss_{l:.4f}.iout_{s:.3f}."""
    return f"epoch_{epoch}.loss_{val_loss:.4f}.iout_{val_score:.3f}"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot file and what its name says: epoch, validation loss and score."""
    path: Path
    epoch: int
    loss: float
    score: float

    @classmethod
    def parse(cls, path):
        """The Snapshot named by `path`, or None when the name is not a snapshot's (e.g. val_masks_*.npy)."""
        path = Path(path)
        m = SNAPSHOT_NAME.match(path.name)
        if m is None:
            return None
        return cls(path, int(m['epoch']), float(m['loss']), float(m['score']))

    @property
    def rank(self):
        """The sort key of the tie rule: (score, epoch); the larger is the better snapshot."""
        return (-1.0 if self.score != self.score else self.score), self.epoch

    @property
    def cycle(self):
        """k for snapshots/cycle_k/, 'swa' for snapshots/swa/, None for snapshots/ itself."""
        folder = self.path.parent.name
        if folder == 'swa':
            return 'swa'
        if folder.startswith('cycle_') and folder[len('cycle_'):].isdigit():
            return int(folder[len('cycle_'):])
        return None

    @property
    def masks(self):
        """Its validation masks file."""
        return val_masks_path(self.path)

    @property
    def root(self):
        """The experiment directory it belongs to."""
        return experiment_root(self.path)


def snapshot_score(path):
    """(validation score, epoch) parsed from a snapshot's name; (-1.0, -1) for other names."""
    snap = Snapshot.parse(path)
    return snap.rank if snap is not None else (-1.0, -1)


def snapshots_in(folder, recursive=False):
    """The snapshots (Snapshot records, oldest epoch first) of one folder; with recursive, of its subfolders too."""
    folder = Path(folder)
    files = folder.rglob('epoch_*') if recursive else folder.glob('epoch_*')
    snaps = [s for p in files if (s := Snapshot.parse(p)) is not None and p.is_file()]
    return sorted(snaps, key=lambda s: (str(s.path.parent), s.epoch))


def snapshots_of(exp_dir):
    """Every snapshot of an experiment directory: snapshots/, its cycle_k/ folders and swa/."""
    return snapshots_in(Path(exp_dir) / 'snapshots', recursive=True)


def best_of(snaps):
    """The best of some Snapshot records by the tie rule (higher score, then later epoch); None for none."""
    snaps = list(snaps)
    return max(snaps, key=lambda s: s.rank) if snaps else None


def snapshot_folder(path):
    """EXP/snapshots for EXP or EXP/snapshots; UserError when it is not there."""
    d = Path(path)
    if (d / 'snapshots').is_dir():
        d = d / 'snapshots'
    if not d.is_dir():
        raise UserError(f"snapshot folder not found: {d}; pass --snapshot_dir EXP/snapshots")
    return d


def best_per_cycle(snapshot_dir):
    """[(cycle k, best snapshot path)] of the snapshots/cycle_k/ folders of a --cycles run, by cycle."""
    d = snapshot_folder(snapshot_dir)
    cycles = sorted((int(c.name[len('cycle_'):]), c) for c in d.glob('cycle_*')
                    if c.is_dir() and c.name[len('cycle_'):].isdigit())
    if not cycles:
        raise UserError(f"{d} has no cycle_k folders; train with --cycles 2 or more for a snapshot ensemble "
                        f"(or use predict_tta.py on one snapshot)")
    chosen = [(k, best.path) for k, c in cycles if (best := best_of(snapshots_in(c))) is not None]
    if not chosen:
        raise UserError(f"no snapshots in the cycle folders of {d}; train first")
    return chosen


def best_snapshot_of(exp_dir):
    """The snapshot with the best validation score (the later on ties) of an experiment directory.

    Looks in EXP/snapshots/ and its cycle_k/ folders; snapshots/swa/ counts too, so a better SWA
    model is picked. UserError when the directory has no snapshot.
    """
    root = Path(exp_dir)
    best = best_of(snapshots_of(root))
    if best is None:
        raise UserError(f"{root} has no snapshots/epoch_* file; pass an experiment directory that train.py has "
                        f"written to, or a snapshot file")
    return best.path


def experiment_root(path):
    """The experiment directory of a snapshot or validation masks file.

    The folder above the nearest snapshots/ (EXP/snapshots/x, EXP/snapshots/cycle_k/x and
    EXP/snapshots/swa/x all give EXP); a file outside any snapshots/ folder counts as its own
    folder's.
    """
    path = Path(path)
    for folder in list(path.parents)[:2]:
        if folder.name == 'snapshots':
            return folder.parent
    return path.parent


def prediction_path(snapshot, tag=''):
    """Where a prediction of one snapshot goes by default: EXP/predictions/<snapshot name><tag>.csv."""
    snapshot = Path(snapshot)
    return experiment_root(snapshot) / PREDICTIONS / f"{snapshot.name}{tag}.csv"


def ensemble_paths(snapshot_dir):
    """(default submission, .best.json) of a snapshot ensemble of EXP/snapshots:
    EXP/predictions/snapshot_ensemble.csv and EXP/snapshots/snapshot_ensemble.best.json."""
    d = snapshot_folder(snapshot_dir)
    return d.parent / PREDICTIONS / f'{ENSEMBLE}.csv', d / f'{ENSEMBLE}.best.json'


# The keys of train_config.json that other steps read, and their types (bool is no int here).
CONFIG_TYPES = {'data_dir': str, 'folds_csv': str, 'fold': int, 'arch': str, 'limit': int, 'cycles': int,
                'val_augs': str, 'val_transforms': str, 'n_epochs': int, 'border': bool}
# What the threshold search and the predict steps need of a run's config.
CONFIG_NEEDS = ('data_dir', 'folds_csv', 'fold')


def _typed(value, kind):
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def read_config(path, needs=CONFIG_NEEDS):
    """train_config.json as a dict, checked: each of `needs` is there, and every known key has its type.

    The one reader of the file: a file edited by hand or written by another version is one line that
    names the file and the key.
    """
    path = Path(path)
    guard(path)
    fix = "it is written by train.py: restore it, or train the run again"
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({str(e).splitlines()[0][:100]}); {fix}") from None
    return check_config(config, path, needs, fix)


def check_config(config, path, needs=CONFIG_NEEDS, fix="it is written by train.py: restore it, or train the run again"):
    """A run's config (from train_config.json or a checkpoint `path`) with the keys `needs` and the types of
    CONFIG_TYPES; else one line naming the file and the key."""
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a {type(config).__name__}, not the run's options; {fix}")
    for key in needs:
        if key not in config:
            raise UserError(f"{path} has no key {key!r}; {fix}")
    for key, kind in CONFIG_TYPES.items():
        if key in config and config[key] is not None and not _typed(config[key], kind):
            raise UserError(f"{path}: key {key!r} is {config[key]!r}, not a{'n' if kind is int else ''} "
                            f"{kind.__name__}; {fix}")
    return config


def find_config(path, needs=()):
    """train_config.json of the experiment a snapshot or masks file belongs to (searching upwards), checked
    by read_config (with the keys `needs`); (None, None) when there is none."""
    p = Path(path).resolve().parent
    for _ in range(4):
        if (p / 'train_config.json').is_file():
            return read_config(p / 'train_config.json', needs), p
        p = p.parent
    return None, None


def val_masks_path(snapshot):
    """The fold's validation probabilities saved beside a snapshot: val_masks_<snapshot name>.npy."""
    snapshot = Path(snapshot)
    return snapshot.parent / f'val_masks_{snapshot.name}.npy'


def best_json_path(masks_fn):
    """Where optimize_threshold.py keeps the best threshold and min_size of a masks file: <stem>.best.json."""
    masks_fn = Path(masks_fn)
    return masks_fn.with_name(masks_fn.with_suffix('').name + '.best.json')


def save_found(path, record):
    """Write a threshold search's result (.best.json / .oof.best.json): at least 'threshold' and 'min_size'."""
    save_json(path, record)


def read_found(path, make_it):
    """(threshold, min_size) from a .best.json / .oof.best.json; errors name the command that makes it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--th/--min_size auto need {path}; make it with: {make_it}")
    guard(path)
    try:
        best = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise UserError(f"{path} is not optimize_threshold.py's output (not readable JSON); run optimize_threshold.py "
                        f"again") from None
    if not isinstance(best, dict):
        raise UserError(f"{path} is not optimize_threshold.py's output (a {type(best).__name__}, not a record); run "
                        f"optimize_threshold.py again")
    values = {}
    for key, kind, lo, hi in (('threshold', float, 0, 1), ('min_size', int, 0, 101 * 101)):
        if key not in best:
            raise UserError(f"{path} has no key {key!r}: not optimize_threshold.py's output; run optimize_threshold.py "
                            f"again")
        try:
            v = kind(best[key]) if not isinstance(best[key], (bool, list, dict)) else None
        except (TypeError, ValueError):
            v = None
        if v is None or not lo <= v <= hi or (kind is int and float(best[key]) != v):
            raise UserError(f"{path}: key {key!r} is {best[key]!r}, not a{'n' if kind is int else ''} {kind.__name__} "
                            f"in [{lo}, {hi}]; run optimize_threshold.py again")
        values[key] = v
    return values['threshold'], values['min_size']


def searched_options(snapshot, th, min_size):
    """Replace 'auto' threshold / min_size by what optimize_threshold.py saved for this snapshot (printed)."""
    if 'auto' not in (th, min_size):
        return th, min_size
    masks_fn = val_masks_path(snapshot)
    found = best_json_path(masks_fn)
    best_th, best_size = read_found(found, f"python3 optimize_threshold.py --masks_fn {masks_fn}")
    th = best_th if th == 'auto' else th
    min_size = best_size if min_size == 'auto' else min_size
    print(f"from {found.name}: --th {th:.2f} --min_size {min_size}")
    return th, min_size


def resolve_snapshot(path):
    """A snapshot path as given, or the best snapshot of an experiment directory (printed)."""
    p = Path(path)
    if p.is_dir() and (p / 'train_config.json').is_file():
        best = best_snapshot_of(p)
        print(f"best snapshot of {p}: {best}")
        return best
    return p


# ---------------------------------------------------------------- the resume checkpoint's contents

# What --resume reads; a checkpoint without one of them is damaged or was not written by train.py.
CHECKPOINT_KEYS = ('model', 'optimizer', 'epoch', 'rows', 'best', 'base_lrs', 'rng', 'seconds_spent', 'config')
# What a resumed run reads of the config in its checkpoint.
RESUME_NEEDS = ('arch', 'loss', 'optimizer', 'scheduler', 'train_augs', 'val_augs', 'val_transforms', 'batch_size',
                'n_epochs', 'cycles', 'fold', 'seed', 'limit', 'border', 'data_dir', 'folds_csv')


def checkpoint_state(model, optimizer, scaler, epoch, cycle, rows, best, base_lrs, rng, seconds_spent, config,
                     swa=None):
    """The dict that Experiment.save_checkpoint writes after `epoch`: everything --resume needs.

    model, optimizer: state dicts; scaler: the gradient scaler's state dict or None; swa: the
    averaged model's state dict or None; rows: the log so far; best: the current cycle's best;
    base_lrs: each parameter group's rate at the start of a cycle; rng: the generators' states.
    """
    return {'model': model, 'optimizer': optimizer, 'scaler': scaler if scaler is not None else {},
            'epoch': epoch, 'cycle': cycle, 'rows': rows, 'best': best, 'base_lrs': base_lrs, 'rng': rng,
            'seconds_spent': seconds_spent, 'config': config, 'swa': swa}


def read_checkpoint(path):
    """The checkpoint dict at `path` (see checkpoint_state); UserError for a damaged or foreign file.

    Earlier versions also stored the learning-rate scheduler's state ('scheduler'): it is dropped,
    the rate being a function of the epoch (net.optim.lr_at) now.
    """
    fix = "start again with --overwrite"
    state = load_torch(path, 'checkpoint', fix)
    release(path)  # the run rewrites its checkpoint every epoch
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) <= set(state) or not isinstance(state['config'], dict):
        raise UserError(f"{path} is not a checkpoint written by train.py; {fix}")
    check_config(state['config'], f"the run's options in {path}", RESUME_NEEDS, fix)
    state.pop('scheduler', None)
    return state
