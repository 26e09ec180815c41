"""Snapshot ensemble: the best snapshot of each cycle of a --cycles K run, each with TTA, averaged.

    python3 train.py ... --cycles 4 --scheduler cosine --experiment_dir experiments/se_fold0
    python3 predict_se.py --snapshot_dir experiments/se_fold0/snapshots --th 0.5

"Best" is the highest validation score (the iout_ part of the name). Writes
EXP/predictions/snapshot_ensemble.csv and its raw probabilities beside it.
"""
import re
from pathlib import Path

import numpy as np

from utils.cli import Parser, data_options, device_options, probability
from utils.errors import UserError, run_cli

NAME = re.compile(r'^epoch_(\d+)\.loss_([-\d.na]+)\.iout_([\d.]+)$')


def parse_args(argv=None):
    from net.tta import TTAS
    p = Parser(description=__doc__.split('\n')[0], parents=[data_options(), device_options()])
    p.add_argument('--snapshot_dir', required=True, help="EXP/snapshots of a run trained with --cycles > 1 (or EXP)")
    p.add_argument('--cycles', type=int, default=0, help="use only the last N cycles (default: all)")
    p.add_argument('--th', type=probability, default=0.5)
    p.add_argument('--tta', default='null_hflip', choices=sorted(TTAS))
    p.add_argument('--arch', default=None)
    p.add_argument('--val_augs', default=None)
    p.add_argument('--val_transforms', default=None)
    p.add_argument('--batch_size', type=int, default=64)
    p.add_argument('--min_size', type=int, default=0, help="drop predicted salt regions smaller than this many pixels")
    p.add_argument('--out', default=None, help="submission CSV (default: EXP/predictions/snapshot_ensemble.csv)")
    args = p.parse_args(argv)
    from predict import check_options
    check_options(p, args)
    return args


def best_per_cycle(snapshot_dir):
    """[(cycle, best snapshot path)] from snapshots/cycle_k/ folders, by validation score."""
    d = Path(snapshot_dir)
    if (d / 'snapshots').is_dir():
        d = d / 'snapshots'
    if not d.is_dir():
        raise UserError(f"snapshot folder not found: {d}; pass --snapshot_dir EXP/snapshots")
    cycles = sorted((int(c.name.split('_')[1]), c) for c in d.glob('cycle_*') if c.name.split('_')[1].isdigit())
    if not cycles:
        raise UserError(f"{d} has no cycle_k folders; train with --cycles 2 or more for a snapshot ensemble "
                        f"(or use predict_tta.py on one snapshot)")
    chosen = []
    for k, c in cycles:
        snaps = [(float(m.group(3)), -int(m.group(1)), f) for f in c.iterdir() if (m := NAME.match(f.name))]
        if snaps:
            chosen.append((k, max(snaps)[2]))
    if not chosen:
        raise UserError(f"no snapshots in the cycle folders of {d}; train first")
    return chosen


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    from net.runtime import setup_runtime
    from net.tta import build_tta
    from predict import finish, predict_one, resolve_data_dir
    from utils.data import load_test_images
    from utils.io import load_snapshot

    chosen = best_per_cycle(args.snapshot_dir)
    if args.cycles:
        chosen = chosen[-args.cycles:]
    rt = setup_runtime(args.device, args.amp, args.channels_last, args.workers, args.threads)
    views = build_tta(args.tta)
    first = load_snapshot(chosen[0][1])
    images, ids = load_test_images(resolve_data_dir(args, first))
    total = None
    for k, path in chosen:
        print(f"cycle {k}: {path.name}")
        probs, _ = predict_one(path, args, rt, images, views)
        p = probs['mask'].astype(np.float32)
        total = p if total is None else total + p
    mean = (total / len(chosen)).astype(np.float16)
    root = Path(chosen[0][1]).parent.parent.parent
    out = args.out or root / 'predictions' / 'snapshot_ensemble.csv'
    return finish(out, ids, mean, args.th, min_size=args.min_size)


if __name__ == '__main__':
    run_cli(main)
