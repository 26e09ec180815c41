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
    EXP/.lock                                 while a run goes: flocked by it, names its host, pid and command
                                              (utils.run_lock)

Snapshot names and the files beside them are utils.snapshots'; the config and checkpoint
readers are utils.checkpoint's.
"""
import contextlib
import os
import shutil
from pathlib import Path

from utils.checkpoint import read_config
from utils.errors import UserError
from utils.io import RUN_CONFIG, SNAPSHOT_FORMAT, own_run, run_folder_of, TEMP_NAME, WriteError, host, save_json, save_npy, save_rows, save_torch, write_error
from utils.run_lock import RunLock
from utils.snapshots import best_json_path, snapshot_name, snapshots_in, val_masks_path

LOG_COLUMNS = ['epoch', 'cycle', 'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr', 'seconds']


class Experiment:
    def __init__(self, root):
        self.root = Path(root)
        self.config_path = self.root / RUN_CONFIG
        self.log_path = self.root / 'logs' / 'log.csv'
        self.checkpoint_path = self.root / 'checkpoint.pth'
        self.snapshot_root = self.root / 'snapshots'
        self.summary_path = self.root / 'summary.json'
        self.lock = RunLock(self.root)
        self._resumed_from = None  # (inode, mtime, size) of the checkpoint that check() saw

    def has_run(self):
        return any(p.exists() for p in (self.config_path, self.log_path, self.checkpoint_path, self.snapshot_root,
                                        self.summary_path))

    def check(self, resume, overwrite, data_dir=None):
        """Refuse --resume/--overwrite choices that do not fit the directory, a directory that may not hold a
        run (check_folder), or one another run is using now; writes nothing."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        self.check_folder(data_dir)
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

    def check_folder(self, data_dir=None):
        """The experiment directory is a folder (or not there yet), not a file; it is not inside another run's
        folder or the data folder `data_dir`; and the logs/ or snapshots/ it holds are a run's. Else one line."""
        for p in (self.root, *self.root.parents):
            if p.exists():
                if not p.is_dir():
                    raise UserError(f"--experiment_dir {self.root}: {p} is a file, not a folder; pass a folder "
                                    f"(a new one, or one that train.py made)")
                break
        outer = run_folder_of(self.root)  # a folder above it that holds a run
        if outer is not None:
            raise UserError(f"--experiment_dir {self.root} is inside the run folder {outer}; pass a folder outside "
                            f"it (e.g. beside it)")
        if data_dir is not None:
            data = Path(data_dir).resolve()
            if data == self.root.resolve() or data in self.root.resolve().parents:
                raise UserError(f"--experiment_dir {self.root} is inside the data folder {data_dir}; pass a folder "
                                f"outside it (e.g. experiments/NAME)")
        if not self.config_path.exists() and not self.checkpoint_path.exists():
            theirs = [p.name for p in (self.snapshot_root, self.root / 'logs', self.summary_path) if p.exists()]
            if theirs:  # --overwrite would delete them, and they are not train.py's
                raise UserError(f"--experiment_dir {self.root} holds {', '.join(theirs)} but no run of train.py (no "
                                f"{RUN_CONFIG} or checkpoint.pth); pass another --experiment_dir")

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
        own_run(self.root)  # train.py's files there are this command's outputs (utils.io.check_output)
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


def _alive(pid):
    """Whether process `pid` of this machine runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True
