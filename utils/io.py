"""File I/O that never leaves a half-written output and never trusts what it reads.

Every output is written to a temporary file beside its destination and renamed into place,
so an interrupted run leaves the earlier file intact. A write that fails for want of space or
permission is one UserError (WriteError) naming the file, and the temporary file goes. Arrays
are read without pickle and snapshots with ``weights_only=True``, so a file cannot run code when
it is loaded.
"""
import contextlib
import csv
import errno
import functools
import json
import os
import pickle
import re
import socket
import warnings
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError

# Failures of a write that the user can fix (space, quota, permissions), not bugs: one line each.
_WRITE_PROBLEMS = {
    errno.ENOSPC: ('no space left on the device', 'space'),
    errno.EDQUOT: ('disk quota exceeded', 'space'),
    errno.EFBIG: ('file too large for the file system or the limits of this process', 'space'),
    errno.EROFS: ('the file system is read-only', 'access'),
    errno.EACCES: ('permission denied', 'access'),
    errno.EPERM: ('operation not permitted', 'access'),
}


class WriteError(UserError):
    """An output that could not be written (full disk, quota, read-only or unwritable folder).

    The message names the file, the reason and what to do; `advise(space, access)` gives the same
    error with the advice of the caller, who knows which option moves the output elsewhere.
    """

    def __init__(self, path, err, fix=None):
        self.path, self.errno = Path(path), err.errno
        self.reason, self.kind = _WRITE_PROBLEMS.get(err.errno, (os.strerror(err.errno or 0), 'space'))
        self.fix = fix or ("free space on that disk, or write to another folder" if self.kind == 'space'
                           else f"make {self.path.parent} writable, or write to another folder")
        super().__init__(f"cannot write {self.path}: {self.reason}; {self.fix}")

    def advise(self, space, access):
        """The same error with the caller's advice: `space` for a full disk or quota, `access` for permissions."""
        return WriteError(self.path, OSError(self.errno, self.reason), space if self.kind == 'space' else access)


@contextlib.contextmanager
def advice(space, access):
    """Within: a WriteError carries the caller's advice (`space`: full disk or quota; `access`: permissions)."""
    try:
        yield
    except WriteError as e:
        raise e.advise(space, access) from None


def write_error(e, path=None):
    """The WriteError for an OSError of space or permissions, naming `path` (None for any other OSError)."""
    if e.errno not in _WRITE_PROBLEMS:
        return None
    return WriteError(path or e.filename, e)


@functools.lru_cache(maxsize=None)
def host():
    """This machine's name, as it goes into temporary-file names and experiment locks."""
    return socket.gethostname() or 'localhost'


def temp_name(path, pid=None):
    """.NAME.tmpPID@HOST beside `path`: whose it is, so that only its own machine ever cleans it up."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp{os.getpid() if pid is None else pid}@{host()}')


TEMP_NAME = re.compile(r'^\.(?P<name>.+)\.tmp(?P<pid>\d+)@(?P<host>[^@/]+)$')


# ---------------------------------------------------------------- what an output may not replace
# The files this command reads, and the data folders it uses (their stacked arrays and the
# competition's CSVs): path (resolved) -> what it is, for the message. Every output goes through
# check_output (atomic_path calls it), so no option can make a command write over its own input.
# A command starts afresh (new_command, called by utils.cli.Parser when it parses a command line).
_GUARDED = {}
STACKED = ('train_images.npy', 'train_masks.npy', 'test_images.npy')
COMPETITION_CSVS = ('train.csv', 'sample_submission.csv', 'depths.csv')
FOLDS_CSV = 'train_with_folds.csv'
# A run folder: its config (which marks a folder as a run) and the sub-folder predictions go to by default.
RUN_CONFIG = 'train_config.json'
PREDICTIONS = 'predictions'


def _key(path):
    return os.path.realpath(os.path.abspath(path))


def new_command():
    """Forget the inputs of an earlier command of this process (and the runs it trained)."""
    _GUARDED.clear()
    _OWN_RUNS.clear()


# The run folders this command trains (train.py's Experiment): only there may it write a run's own files.
_OWN_RUNS = set()


def own_run(root):
    """This command is the run in folder `root`: train.py's files there are its outputs."""
    _OWN_RUNS.add(_key(root))


def runs_own_file(rel):
    """Whether `rel`, a path inside a run folder, is one of the files train.py writes there: its config, checkpoint,
    summary, lock, logs/ and tensorboard/, and under snapshots/ each snapshot and its validation masks."""
    parts = Path(rel).parts
    if not parts:
        return False
    if len(parts) == 1:
        return parts[0] in (RUN_CONFIG, 'checkpoint.pth', 'summary.json', '.lock')
    if parts[0] in ('logs', 'tensorboard'):
        return True
    name = parts[-1]
    return parts[0] == 'snapshots' and (name.startswith('epoch_') or (name.startswith('val_masks_')
                                                                       and name.endswith('.npy')))


def guard(path, what='an input of this command'):
    """No output of this command may replace `path` (what: the file's role, for the message)."""
    _GUARDED.setdefault(_key(path), what)


def release(path):
    """`path` is an output of this command after all (stack_and_save.py remakes the stacked arrays)."""
    _GUARDED.pop(_key(path), None)


def guard_data_dir(data_dir):
    """The stacked arrays and the competition's CSVs of a data folder are never an output of another step."""
    for name in STACKED + COMPETITION_CSVS + (FOLDS_CSV,):  # this reason wins over "an input": it says more
        _GUARDED[_key(Path(data_dir) / name)] = f"part of the data folder {data_dir}" + (
            " (made by utils/stack_and_save.py)" if name in STACKED else " (made by utils/make_folds.py)"
            if name == FOLDS_CSV else " (from the competition download)")


class OutputError(UserError):
    """An output path that cannot or must not be written; the message names it."""


def check_output(path):
    """Refuse, before anything is written, an output that would replace an input of this command, or whose
    path cannot hold a file (a directory there, a file above it, a broken link, a name too long)."""
    path = Path(path)
    why = _GUARDED.get(_key(path))
    if why is not None:
        raise OutputError(f"refusing to write {path}: it is {why}, which this command must not replace; "
                          f"pass another output path")
    run = run_folder_of(path)
    if run is not None and _key(run) not in _OWN_RUNS and runs_own_file(path.absolute().relative_to(run)):
        raise OutputError(f"refusing to write {path}: it is a file of the run in {run}, which only train.py writes "
                          f"there; pass another output path")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; pass a file path")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"cannot write {path}: it is a link to {os.readlink(path)}, which does not exist; "
                          f"remove the link or pass another path")
    for parent in path.parents:
        if parent.is_symlink() and not parent.exists():
            raise OutputError(f"cannot write {path}: {parent} is a link to {os.readlink(parent)}, which does not "
                              f"exist; pass another path")
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot write {path}: {parent} is a file, not a folder; pass another path")
            break
    limit = 255
    with contextlib.suppress(OSError):
        here = next((p for p in path.parents if p.is_dir()), Path('.'))
        limit = os.pathconf(here, 'PC_NAME_MAX')
    # The file is first written under its temporary name (temp_name), which is the longer one.
    spare = limit - (len(os.fsencode(temp_name(path).name)) - len(os.fsencode(path.name)))
    if len(os.fsencode(path.name)) > spare:
        raise OutputError(f"cannot write {path}: the name {path.name[:40]}... is too long for the file system "
                          f"(at most {spare} bytes here, with the temporary file's suffix); pass a shorter name")


def check_prediction_pair(csv):
    """check_output for a submission `csv` and the probabilities `.npy` beside it, and refuse the pair where
    that `.npy` exists without the CSV: it is then not an earlier prediction of this pair (train.py's
    val_masks_*.npy beside a snapshot, say), and writing the pair would replace it. Inside a run folder (one
    holding train_config.json) a prediction may go only under its predictions/."""
    csv = Path(csv)
    npy = csv.with_suffix('.npy')
    check_output(csv)
    check_output(npy)
    if npy.is_file() and not csv.exists():
        raise OutputError(f"refusing to write {csv}: {npy} exists without it, so it is not an earlier prediction "
                          f"of this name (a run's validation masks, say) and would be replaced; pass another "
                          f"output path, or remove {npy.name} if it is an old prediction's")
    run = run_folder_of(csv)
    if run is not None and csv.absolute().relative_to(run).parts[0] != PREDICTIONS:
        # a run folder's logs/, snapshots/ and top-level files are train.py's and optimize_threshold.py's
        raise OutputError(f"refusing to write {csv}: it is inside the run folder {run}, whose files train.py "
                          f"writes; pass a path under {run / PREDICTIONS} or outside the run")


def run_folder_of(path):
    """The run folder (one holding train_config.json) that `path` lies in, up to three folders down, or None."""
    return next((p for p in list(Path(path).absolute().parents)[:4] if (p / RUN_CONFIG).is_file()), None)


def output_error(path, e):
    """One line for an OSError of writing `path` (space and permissions with advice: WriteError)."""
    if e.errno in _WRITE_PROBLEMS:
        return WriteError(path, e)
    return OutputError(f"cannot write {path}: {e.strerror or e}; pass another output path")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.

    The path is checked first (check_output). Any OSError (in the caller's writes or at the
    rename) becomes one line naming `path` (a WriteError for space or permissions); the file at
    `path` is then the one from before, untouched.
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths):
    """atomic_path for files that belong together (a submission and its probabilities): every path is
    checked before the first is written, each is written to its temporary file, and only when all are
    written are they renamed into place, so that a failure leaves none of them new."""
    paths = [Path(p) for p in paths]
    for p in paths:
        check_output(p)
    tmps = [temp_name(p) for p in paths]
    # With several files, each one's earlier version is kept (a hard link) until all are in place, so that a
    # failed rename of a later one can put the earlier ones back.
    backups = [p.with_name(temp_name(p).name + '.old') for p in paths] if len(paths) > 1 else [None]
    current, done = paths[0], []
    try:
        for p in paths:
            current = p
            p.parent.mkdir(parents=True, exist_ok=True)
        current = paths[0]
        with removed_on_sigterm(tmps + [b for b in backups if b]):
            yield tmps
            try:
                for p, tmp, backup in zip(paths, tmps, backups):
                    current = p
                    kept = False
                    if backup is not None and p.is_file():
                        with contextlib.suppress(OSError):
                            os.link(p, backup)
                            kept = True
                    os.replace(tmp, p)
                    done.append((p, backup if kept else None))
            except OSError:
                for p, backup in reversed(done):  # back to the files from before
                    with contextlib.suppress(OSError):
                        os.replace(backup, p) if backup is not None else p.unlink()
                raise
    except OSError as e:
        if e.errno is None:  # not from the system: a caller's own error
            raise
        raise output_error(current, e) from None  # the output, not the temporary file
    finally:
        for tmp in tmps + [b for b in backups if b]:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def removed_on_sigterm(tmps):
    """Within (main thread only): SIGTERM removes `tmps` and ends the process as SIGTERM would (exit 143)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGTERM)
    if old not in (signal.SIG_DFL, None):  # someone else handles it (train_folds.py, the training loop)
        yield
        return

    def on_term(signum, frame):
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def write_npy(path, array):
    """Write `array` to `path` as .npy, in place (atomic_path's temporary file; save_npy for a whole output)."""
    with open(path, 'wb') as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def write_csv_rows(path, header, rows):
    """Write a CSV in place (see save_rows)."""
    with open(path, 'w', newline='') as f:
        out = csv.writer(f, lineterminator='\n')
        out.writerow(header)
        out.writerows(rows)


def save_npy(path, array):
    with atomic_path(path) as tmp:
        write_npy(tmp, array)


def save_csv(path, frame):
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        frame.to_csv(f, index=False, lineterminator='\n')


def save_rows(path, header, rows):
    """Write a CSV from a header and rows of cells with the csv module (atomically).

    The same bytes as pandas' to_csv for text and ints (minimal quoting, '\n' line ends),
    without importing pandas: the training and predict paths use this.
    """
    with atomic_path(path) as tmp:
        write_csv_rows(tmp, header, rows)


def save_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n')


def save_torch(path, obj):
    import torch
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            # torch's zip writer wraps a failed write of `f` (ENOSPC, ...) in a RuntimeError of its own.
            cause = e
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None


def save_png(path, image):
    # Fast deflate with the SUB filter: on plots, smaller and faster to encode than OpenCV's default.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if hasattr(cv2, 'IMWRITE_PNG_FILTER'):
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    ok, buf = cv2.imencode('.png', image, params)
    if not ok:
        raise UserError(f"could not encode PNG for {path}")
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(buf.tobytes())


def load_npy(path, what, made_by, mmap=False):
    """Load a .npy array without pickle; errors name the file and the command that makes it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a .npy file of {what}; pass the file (made by: {made_by})")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; make it with: {made_by}")
    guard(path)
    fix = f"make it again with: {made_by}"
    # np.load takes any non-.npy file for a pickle (or a .npz for a dict of arrays): check the magic first,
    # so that such a file is named for what it is and never reaches an unpickler.
    try:
        with open(path, 'rb') as f:
            np.lib.format.read_magic(f)
    except (ValueError, OSError, EOFError):
        raise UserError(f"{path} is not a .npy array; {fix}") from None
    try:
        return np.load(path, allow_pickle=False, mmap_mode='r' if mmap else None)
    except ValueError as e:
        if 'object' in str(e).lower() or 'pickle' in str(e).lower():
            raise UserError(f"refused to load {path}: it holds pickled Python objects, which could run code "
                            f"when loaded; {fix}") from None
        raise UserError(f"{path} is not a readable .npy array ({_first_line(e)}); {fix}") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({_first_line(e)}); {fix}") from None


SNAPSHOT_FORMAT = 'salt-snapshot-v1'


def load_torch(path, what, fix):
    """torch.load with ``weights_only=True``: a file whose unpickling would run code is refused unread.

    what: the kind of file, in words, for the messages; fix: what the user should do instead.
    """
    import torch
    path = Path(path)
    guard(path)
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols on stderr; the user only needs the one-line verdict.
            warnings.simplefilter('ignore')
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, 'rb') as f:
            head = f.read(2)
        # A real pickle (bare, or inside torch's zip) that the safe unpickler rejects is refused; other
        # bytes it rejects (a text file, an .npy) are simply not a file of this kind.
        refused = 'weights only' in str(e).lower() and ('GLOBAL' in str(e) or head[:1] == b'\x80' or head == b'PK')
        # Name what the unpickler stopped at (e.g. "GLOBAL posix.system") without torch's paragraph around it.
        culprit = next((ln.strip() for ln in str(e).splitlines() if 'GLOBAL' in ln or 'Unsupported' in ln), '')
        if not refused:
            raise UserError(f"{path} is not a readable {what} ({culprit[:100] or _first_line(e)}); {fix}") from None
        raise UserError(f"refused to load {path}: it is not made of tensors and plain data only, so loading it "
                        f"could run code{f' ({culprit[:100]})' if culprit else ''}; {fix}") from None
    except Exception as e:  # arbitrary bytes make the unpickler fail with almost any exception type
        raise UserError(f"{path} is not a readable {what} ({_first_line(e)}); {fix}") from None


def _first_line(e):
    text = str(e).strip()
    if not isinstance(e, (OSError, RuntimeError, ValueError, pickle.UnpicklingError)):
        text = f"{type(e).__name__} {text}".strip()  # a bare KeyError('101') says nothing by itself
    return text.splitlines()[0][:120] if text else type(e).__name__


def load_snapshot(path):
    """Load a snapshot written by train.py: a dict with 'model', 'arch', 'config', ...

    Uses ``weights_only=True``: a file whose unpickling would run code is refused unread.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, neither a snapshot nor an experiment (no train_config.json); pass a file "
                        f"from EXPERIMENT/snapshots/ (epoch_*.loss_*.iout_*) or an experiment directory")
    if not path.exists():
        raise UserError(f"snapshot not found: {path}; pass a file from EXPERIMENT/snapshots/ (epoch_*.loss_*.iout_*)")
    obj = load_torch(path, 'snapshot', "pass another snapshot, one written by train.py (EXPERIMENT/snapshots/epoch_*) "
                                       "and from a source you trust; a damaged one can be moved out of snapshots/")
    if not isinstance(obj, dict) or obj.get('format') != SNAPSHOT_FORMAT or 'model' not in obj or 'arch' not in obj:
        raise UserError(f"{path} is not a snapshot made by train.py (no arch/model record); pass a file from EXPERIMENT/snapshots/")
    for key, kind in SNAPSHOT_TYPES.items():
        if key in SNAPSHOT_NEEDS and key not in obj:
            raise UserError(f"{path} has no {key!r} record: not a snapshot this version can use; pass a file from "
                            f"EXPERIMENT/snapshots/, made by train.py")
        if key in obj and obj[key] is not None and not isinstance(obj[key], kind):
            raise UserError(f"{path}: its {key!r} record is a {type(obj[key]).__name__}, not a {kind.__name__}; pass "
                            f"a snapshot made by train.py")
    return obj


# What the predict scripts read of a snapshot, and the types (checked once, in load_snapshot).
SNAPSHOT_TYPES = {'model': dict, 'arch': str, 'val_augs': str, 'val_transforms': str, 'config': dict}
SNAPSHOT_NEEDS = ('model', 'arch', 'val_augs', 'val_transforms')
