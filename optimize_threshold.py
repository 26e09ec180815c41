"""Find the probability threshold that maximises the competition score on a fold's validation masks.

    python3 optimize_threshold.py --masks_fn EXP/snapshots/val_masks_epoch_12.loss_0.3012.iout_0.801.npy

The true masks are found from the experiment the file belongs to (its train_config.json names
the data and the fold). Prints the score at each threshold and the best one, and writes the
full curve beside the masks file (.thresholds.csv and .thresholds.png) and the best threshold
and small-region size (.best.json), which `predict*.py --th auto --min_size auto` read.
"""
import argparse
from pathlib import Path

import numpy as np

from utils.cli import Parser
from utils.errors import UserError, run_cli


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--masks_fn', required=True,
                   help="val_masks_*.npy written by train.py beside a snapshot, or an experiment directory (its best snapshot's)")
    p.add_argument('--data_dir', default=None, help="override the experiment's data folder")
    p.add_argument('--steps', type=int, default=101, help="thresholds evenly spaced over [0, 1] (default 101)")
    p.add_argument('--min_sizes', default='10,20,40,80,160,320', type=size_list,
                   help="at the best threshold, also try dropping salt regions below these pixel counts (predict*.py --min_size)")
    return p.parse_args(argv)


def size_list(text):
    try:
        sizes = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--min_sizes {text!r} is not a comma-separated list of pixel counts") from None
    if any(x < 0 for x in sizes):
        raise argparse.ArgumentTypeError("--min_sizes must be >= 0")
    return sizes


def true_masks_for(masks_fn, data_dir=None):
    """The fold's true masks (N, 101, 101) for a validation masks file, in the same order."""
    from utils.data import fold_indices, load_train_arrays
    from utils.experiment import find_config
    config, root = find_config(masks_fn)
    if config is None:
        raise UserError(f"no train_config.json found above {masks_fn}; pass a val_masks_*.npy from an experiment's snapshots/")
    d = Path(data_dir or config['data_dir'])
    _, masks = load_train_arrays(d)
    _, va = fold_indices(d, config['folds_csv'], config['fold'])
    if config.get('limit'):
        va = va[:max(1, config['limit'] // 4)]
    return masks[va]


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    import pandas as pd

    from utils.io import load_npy, save_csv
    from utils.metric import threshold_sweep
    from utils.submission import check_probs

    from utils.experiment import best_json_path, resolve_snapshot, val_masks_path
    if Path(args.masks_fn).is_dir():
        args.masks_fn = val_masks_path(resolve_snapshot(args.masks_fn))
    probs = load_npy(args.masks_fn, 'validation masks', 'python3 train.py ... (it writes val_masks_*.npy beside each snapshot)')
    true = true_masks_for(args.masks_fn, args.data_dir)
    check_probs(probs, args.masks_fn)
    if len(probs) != len(true):
        raise UserError(f"{args.masks_fn} has {len(probs)} masks but its fold has {len(true)} images; "
                        f"pass the val_masks file of this experiment's fold")
    if args.steps < 2:
        raise UserError("--steps must be at least 2")
    ths = np.linspace(0.0, 1.0, args.steps)
    scores = threshold_sweep(probs, true, ths)
    every = max(1, (args.steps - 1) // 20)
    for t, s in list(zip(ths, scores))[::every]:
        print(f"threshold {t:.2f}  score {s:.4f}")
    b = int(np.argmax(scores))
    stem = Path(args.masks_fn).with_suffix('')
    save_csv(stem.with_name(stem.name + '.thresholds.csv'), pd.DataFrame({'threshold': ths, 'score': scores}))
    from utils.plots import threshold_curve
    threshold_curve(stem.with_name(stem.name + '.thresholds.png'), ths, scores, ths[b])
    sizes = sorted(set(args.min_sizes) - {0})
    best_size, best_size_score = 0, float(scores[b])
    if sizes:
        from utils.metric import score
        from utils.submission import binarize
        for m in sizes:
            s = score(binarize(probs, ths[b], m), true)
            print(f"threshold {ths[b]:.2f} --min_size {m:<4d} score {s:.4f}")
            if s > best_size_score:
                best_size, best_size_score = m, float(s)
    from utils.io import save_json
    save_json(best_json_path(args.masks_fn),
              {'threshold': round(float(ths[b]), 6), 'score': float(scores[b]), 'min_size': best_size,
               'score_with_min_size': best_size_score, 'masks': str(args.masks_fn)})
    print(f"best threshold {ths[b]:.2f}: score {scores[b]:.4f} (at 0.50: {np.interp(0.5, ths, scores):.4f})"
          + (f"; with --min_size {best_size}: {best_size_score:.4f}" if best_size else ""))
    return float(ths[b]), float(scores[b])


if __name__ == '__main__':
    run_cli(main)
