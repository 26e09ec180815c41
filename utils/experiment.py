"""An experiment directory: its config, log, snapshots, validation masks and resume checkpoint.

    EXP/train_config.json                     every option of the run, plus fold and data paths
    EXP/logs/log.csv                          one row per epoch
    EXP/snapshots[/cycle_k]/epoch_{e}.loss_{l:.4f}.iout_{s:.3f}          model + how it was made
    EXP/snapshots[/cycle_k]/val_masks_epoch_{e}.loss_{l:.4f}.iout_{s:.3f}.npy   fold's probabilities
    EXP/checkpoint.pth                        everything --resume needs, rewritten every epoch
    EXP/summary.json                          written when the run ends: best epoch, minutes, peak memory
"""
import json
import os
import shutil
from pathlib import Path

from utils.errors import UserError
from utils.io import SNAPSHOT_FORMAT, save_json, save_npy, save_rows, save_torch

LOG_COLUMNS = ['epoch', 'cycle', 'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr', 'seconds']


class Experiment:
    def __init__(self, root):
        self.root = Path(root)
        self.config_path = self.root / 'train_config.json'
        self.log_path = self.root / 'logs' / 'log.csv'
        self.checkpoint_path = self.root / 'checkpoint.pth'
        self.snapshot_root = self.root / 'snapshots'
        self.summary_path = self.root / 'summary.json'

    def has_run(self):
        return any(p.exists() for p in (self.config_path, self.log_path, self.checkpoint_path, self.snapshot_root,
                                        self.summary_path))

    def check(self, resume, overwrite):
        """Refuse --resume/--overwrite choices that do not fit the directory; writes nothing."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; pass one")
        if resume:
            if not self.checkpoint_path.is_file():
                fix = ("it stopped before its first epoch ended; start it again with --overwrite" if self.has_run()
                       else "start it without --resume")
                raise UserError(f"nothing to resume in {self.root} (no checkpoint.pth); {fix}")
        elif self.has_run() and not overwrite:
            raise UserError(f"{self.root} already holds a run; pass --resume to continue it, --overwrite to "
                            f"start again (deletes its snapshots and logs), or another --experiment_dir")

    def prepare(self, resume, overwrite):
        """check(), then delete the run that --overwrite replaces and the temporary files of killed runs.

        train.py calls this only once every input has been checked, so a mistake on the command
        line never costs the earlier run.
        """
        self.check(resume, overwrite)
        if overwrite:
            for p in (self.snapshot_root, self.root / 'logs'):
                shutil.rmtree(p, ignore_errors=True)
            for p in (self.config_path, self.checkpoint_path, self.summary_path):
                p.unlink(missing_ok=True)
        if resume:
            self.summary_path.unlink(missing_ok=True)  # a resumed run is not finished until it ends again
        if self.root.is_dir():
            remove_stale_temporaries(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def load_config(self):
        return json.loads(self.config_path.read_text())

    def write_config(self, config):
        save_json(self.config_path, config)

    def snapshot_dir(self, cycle, cycles):
        if cycle == 'swa':
            return self.snapshot_root / 'swa'
        return self.snapshot_root / f'cycle_{cycle}' if cycles > 1 else self.snapshot_root

    def save_snapshot(self, model_state, config, epoch, cycle, metrics, val_probs):
        """Write a snapshot and its validation masks; returns the snapshot's path."""
        name = f"epoch_{epoch}.loss_{metrics['val_loss']:.4f}.iout_{metrics['val_score']:.3f}"
        path = self.snapshot_dir(cycle, config['cycles']) / name
        save_npy(val_masks_path(path), val_probs.astype('float16'))
        save_torch(path, {
            'format': SNAPSHOT_FORMAT, 'model': model_state, 'arch': config['arch'], 'config': config,
            'epoch': epoch, 'cycle': cycle, 'fold': config['fold'], 'metrics': metrics,
            'val_augs': config['val_augs'], 'val_transforms': config['val_transforms'],
        })
        return path

    def write_log(self, rows):
        save_rows(self.log_path, LOG_COLUMNS, ([_cell(r.get(c)) for c in LOG_COLUMNS] for r in rows))

    def write_summary(self, summary):
        """Mark the run finished: what train.py reports at its end, as JSON."""
        save_json(self.summary_path, {**summary, 'finished': True})

    def is_finished(self):
        return self.summary_path.is_file()

    def save_checkpoint(self, state):
        save_torch(self.checkpoint_path, state)


def _cell(v):
    """A log value as text: numbers as Python writes them (floats round-trip exactly), None empty."""
    if v is None:
        return ''
    if hasattr(v, 'item'):  # numpy / torch scalars
        v = v.item()
    return repr(float(v)) if isinstance(v, float) else str(v)


def remove_stale_temporaries(root):
    """Delete the .NAME.tmpPID files (utils.io.atomic_path) that a killed process left under root."""
    for p in root.rglob('.*.tmp*'):
        pid = p.name.rsplit('.tmp', 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_config(path):
    """train_config.json of the experiment a snapshot or masks file belongs to (searching upwards)."""
    p = Path(path).resolve().parent
    for _ in range(4):
        if (p / 'train_config.json').is_file():
            return json.loads((p / 'train_config.json').read_text()), p
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


def snapshot_score(path):
    """(validation score, epoch) parsed from a snapshot's name: epoch_{e}.loss_{l}.iout_{s}."""
    name = Path(path).name
    try:
        return float(name.rsplit('iout_', 1)[1]), int(name.split('.', 1)[0][len('epoch_'):])
    except (IndexError, ValueError):
        return -1.0, -1


def best_snapshot_of(exp_dir):
    """The snapshot with the best validation score (the later on ties) of an experiment directory.

    Looks in EXP/snapshots/ and its cycle_k/ folders; snapshots/swa/ counts too, so a better SWA
    model is picked. UserError when the directory has no snapshot.
    """
    root = Path(exp_dir)
    snaps = [p for p in (root / 'snapshots').rglob('epoch_*') if p.is_file()]
    if not snaps:
        raise UserError(f"{root} has no snapshots/epoch_* file; pass an experiment directory that train.py has "
                        f"written to, or a snapshot file")
    return max(snaps, key=snapshot_score)


def resolve_snapshot(path):
    """A snapshot path as given, or the best snapshot of an experiment directory (printed)."""
    p = Path(path)
    if p.is_dir() and (p / 'train_config.json').is_file():
        best = best_snapshot_of(p)
        print(f"best snapshot of {p}: {best}")
        return best
    return p
