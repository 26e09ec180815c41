"""The run's options (train_config.json, and the config inside a checkpoint) and the resume checkpoint:
what they hold, and their one reader each, which names the file and the key of anything wrong."""
import json
from pathlib import Path

from utils.errors import UserError
from utils.io import RUN_CONFIG, guard, load_torch, release

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
        if (p / RUN_CONFIG).is_file():
            return read_config(p / RUN_CONFIG, needs), p
        p = p.parent
    return None, None


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
