"""Snapshots: their names, the best of them, and the files beside them (validation masks, thresholds,
predictions).

This module is the only place that writes or reads a snapshot's name; everything else asks it.
The one tie rule: the best snapshot has the highest validation score (the iout_ part of the name,
three decimals), and on equal scores the later epoch wins (it has trained longer on the same
evidence). best_of, best_snapshot_of, best_per_cycle and Experiment.prune_snapshots all follow it.
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError
from utils.io import PREDICTIONS, RUN_CONFIG, guard, save_json

SNAPSHOT_NAME = re.compile(r'^epoch_(?P<epoch>\d+)\.loss_(?P<loss>-?(?:[\d.]+|nan|inf))\.iout_(?P<score>-?(?:[\d.]+|nan))$')
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
    if p.is_dir() and (p / RUN_CONFIG).is_file():
        best = best_snapshot_of(p)
        print(f"best snapshot of {p}: {best}")
        return best
    return p
