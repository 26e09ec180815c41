"""Snapshot ensemble: the best snapshot of each cycle of a --cycles K run, each with TTA, averaged.

    python3 train.py ... --cycles 4 --scheduler cosine --experiment_dir experiments/se_fold0
    python3 predict_se.py --snapshot_dir experiments/se_fold0/snapshots --th 0.5

"Best" is the highest validation score (the iout_ part of the name; the later epoch on equal
scores). Writes EXP/predictions/snapshot_ensemble.csv and its raw probabilities beside it (with
--images DIR: snapshot_ensemble.<DIR's name>.csv).

`--th auto --min_size auto` average the chosen snapshots' validation masks, search the threshold
and small-region size on them (as optimize_threshold.py does for one snapshot), save the result
as EXP/snapshots/snapshot_ensemble.best.json and use it.
"""
import dataclasses
from pathlib import Path

import numpy as np

from net.inference import (check_prediction_outputs, emptied, images_to_predict, output_tag, predict_args,
                           predict_one)
from net.runtime import setup_runtime
from net.tta import build_tta
from utils.errors import run_cli
from utils.io import load_snapshot
from utils.snapshots import ENSEMBLE, best_per_cycle, ensemble_paths
from utils.submission import save_prediction
from utils.thresholds import ensemble


def parse_args(argv=None):
    return predict_args(__doc__.split('\n')[0], argv, tta='null_hflip', snapshot=False)


def ensemble_options(chosen, snapshot_dir, th, min_size, data_dir=None):
    """Replace 'auto' threshold / min_size by a search on the chosen snapshots' averaged validation masks."""
    if 'auto' not in (th, min_size):
        return th, min_size
    _, best_json = ensemble_paths(snapshot_dir)
    found = ensemble([path for _, path in chosen], best_json, data_dir)
    th = found['threshold'] if th == 'auto' else th
    min_size = found['min_size'] if min_size == 'auto' else min_size
    print(f"saved {best_json}: --th {th:.2f} --min_size {min_size}")
    return th, min_size


def main(argv=None):
    args = parse_args(argv)
    chosen = best_per_cycle(args.snapshot_dir)
    if args.cycles:
        chosen = chosen[-args.cycles:]
    default, _ = ensemble_paths(args.snapshot_dir)
    out = args.out or default.with_name(f'{ENSEMBLE}{output_tag(args)}.csv')
    check_prediction_outputs(out, args, load_snapshot(chosen[0][1]))
    for k, path in chosen:
        print(f"cycle {k}: {path.name}")
    # The search needs the fold's true masks: from --data_dir when it holds training data, else from the
    # folder the run was trained on (a --data_dir for --images may hold a sample_submission.csv alone).
    train_dir = args.data_dir if args.data_dir and (Path(args.data_dir) / 'train.csv').is_file() else None
    th, min_size = ensemble_options(chosen, args.snapshot_dir, args.th, args.min_size, train_dir)
    args = dataclasses.replace(args, th=th, min_size=min_size)
    rt = setup_runtime(args.device, args.amp, args.channels_last, args.workers, args.threads)
    views = build_tta(args.tta)
    first = load_snapshot(chosen[0][1])
    images, ids = images_to_predict(args, first)
    total = {}
    for k, path in chosen:
        probs, _ = predict_one(path, args, rt, images, views)
        for key in ('mask', 'salt'):
            if key in probs:
                p = probs[key].astype(np.float32)
                total[key] = p if key not in total else total[key] + p
    mean = {key: (t / len(chosen)).astype(np.float16) for key, t in total.items()}
    extra = {'salt': mean['salt']} if 'salt' in mean else None
    return save_prediction(out, ids, mean['mask'], args.th, extra, args.min_size,
                           emptied(mean.get('salt'), args.empty_below))


if __name__ == '__main__':
    run_cli(main)
