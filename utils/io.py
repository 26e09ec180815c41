"""File I/O that never leaves a half-written output and never trusts what it reads.

Every output is written to a temporary file beside its destination and renamed into place,
so an interrupted run leaves the earlier file intact. Arrays are read without pickle and
snapshots with ``weights_only=True``, so a file cannot run code when it is loaded.
"""
import contextlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from utils.errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def save_csv(path, frame):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n')


def save_torch(path, obj):
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_png(path, image):
    import cv2
    ok, buf = cv2.imencode('.png', image)
    if not ok:
        raise UserError(f"could not encode PNG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def load_npy(path, what, made_by, mmap=False):
    """Load a .npy array without pickle; errors name the file and the command that makes it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; make it with: {made_by}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode='r' if mmap else None)
    except ValueError as e:
        if 'allow_pickle' in str(e) or 'pickle' in str(e).lower():
            raise UserError(f"{path} holds pickled objects, which are refused; make it again with: {made_by}") from None
        raise UserError(f"{path} is not a readable .npy array ({e}); make it again with: {made_by}") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path} is not a readable .npy array ({e}); make it again with: {made_by}") from None


SNAPSHOT_FORMAT = 'salt-snapshot-v1'


def load_snapshot(path):
    """Load a snapshot written by train.py: a dict with 'model', 'arch', 'config', ...

    Uses ``weights_only=True``: a file whose unpickling would run code is refused unread.
    """
    import torch
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise UserError(f"snapshot not found: {path}; pass a file from EXPERIMENT/snapshots/ (epoch_*.loss_*.iout_*)")
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else 'unsafe content'
        raise UserError(f"refused to load {path}: it holds more than tensors and plain data "
                        f"({first[:120]}); only load snapshots from sources you trust, made by train.py") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError, ImportError) as e:
        raise UserError(f"{path} is not a readable snapshot ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__}); "
                        f"pass a file written by train.py") from None
    if not isinstance(obj, dict) or obj.get('format') != SNAPSHOT_FORMAT or 'model' not in obj or 'arch' not in obj:
        raise UserError(f"{path} is not a snapshot made by train.py (no arch/model record); pass a file from EXPERIMENT/snapshots/")
    return obj
