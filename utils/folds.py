"""The folds of a multi-fold run: which folds (--folds), where each one's experiment directory is, and
what state it is in. train_folds.py runs them with net.fold_scheduler."""
import re
from pathlib import Path

from utils.checkpoint import read_config
from utils.errors import UserError
from utils.run_folder import Experiment
from utils.snapshots import snapshots_of


def parse_folds(text):
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,3' -> [0, 2, 3]; '3' -> [3]; ranges and lists mix ('0-2,4')."""
    folds = []
    for part in text.split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)\s*-\s*(\d+)|(\d+)', part)
        if not m:
            raise UserError(f"--folds {text!r} is not a fold list; pass e.g. 0-4, 0,2,3 or 3")
        a, b = (int(m.group(1)), int(m.group(2))) if m.group(3) is None else (int(m.group(3)),) * 2
        if b < a:
            raise UserError(f"--folds {text!r}: the range {part} runs backwards; pass {b}-{a}")
        folds += [k for k in range(a, b + 1) if k not in folds]
    return folds


def fold_dir(template, fold):
    """The experiment directory of `fold`: {fold} in the template replaced, else TEMPLATE_fold{k}."""
    template = str(template)
    return Path(template.replace('{fold}', str(fold)) if '{fold}' in template else f"{template.rstrip('/')}_fold{fold}")


def fold_state(d, fold):
    """'finished', 'resume', 'restart' (a run that ended before its first checkpoint) or 'new'.

    Finished means train.py wrote summary.json after the last checkpoint: a summary older than the
    checkpoint belongs to an earlier end of a run that was resumed or overwritten since.
    """
    exp = Experiment(d)
    summary = exp.root / 'summary.json'
    if exp.config_path.is_file():
        made_for = read_config(exp.config_path, needs=()).get('fold')
        if made_for is not None and made_for != fold:
            raise UserError(f"{d} holds a run of fold {made_for}, not fold {fold}; pass another --experiment_dir "
                            f"(with {{fold}} where the fold number goes)")
    if exp.checkpoint_path.is_file():
        if summary.is_file() and summary.stat().st_mtime_ns >= exp.checkpoint_path.stat().st_mtime_ns:
            return 'finished'
        return 'resume'
    if not exp.has_run():
        return 'new'
    if snapshots_of(exp.root):
        raise UserError(f"{d} holds snapshots but no checkpoint.pth to resume from; move it away (or delete it) "
                        f"to train fold {fold} again")
    return 'restart'
