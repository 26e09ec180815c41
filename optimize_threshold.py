"""Find the probability threshold that maximises the competition score on a fold's validation masks.

    python3 optimize_threshold.py --masks_fn experiments/wide_fold0     # its best snapshot's val_masks_*.npy

The true masks are found from the experiment the file belongs to (its train_config.json names
the data and the fold). Prints the score at each threshold and the best one, and writes the
full curve beside the masks file (.thresholds.csv and .thresholds.png) and the best threshold
and small-region size (.best.json), which `predict*.py --th auto --min_size auto` read.

Out of fold: with one experiment per fold, the search runs on all their validation images
together and prints each fold's own score beside the out-of-fold one:

    python3 optimize_threshold.py --masks_fn experiments/gpu_fold0 experiments/gpu_fold1 experiments/gpu_fold2

It saves experiments/gpu.oof.best.json (the experiments' folder and common name; --out to
choose), with .oof.thresholds.csv/.png beside it, which `predict_fold_avg.py --th auto
--min_size auto` reads.
"""
import argparse

from utils.cli import Parser, check_ranges
from utils.errors import run_cli
from utils.thresholds import MIN_SIZES, masks_file, out_of_fold, single


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0],
               epilog="With several --masks_fn, one experiment per fold (e.g. experiments/gpu_fold0 ... "
                      "experiments/gpu_fold4), the search runs on all their validation images together: the "
                      "out-of-fold threshold and min_size, printed beside each fold's own score at the same "
                      "threshold and saved for predict_fold_avg.py --th auto --min_size auto (see --out).")
    p.add_argument('--masks_fn', required=True, nargs='+', metavar='MASKS',
                   help="val_masks_*.npy written by train.py beside a snapshot, or an experiment directory (its best "
                        "snapshot's); several, one per fold: the out-of-fold search")
    p.add_argument('--out', default=None,
                   help="out of fold: where to save the result (a .json; default PARENT/NAME.oof.best.json, PARENT "
                        "the folder of the experiments and NAME their common name without the fold number, e.g. "
                        "experiments/gpu.oof.best.json for experiments/gpu_fold0..4); given with one --masks_fn, "
                        "that fold's result goes there instead of beside the masks file")
    p.add_argument('--data_dir', default=None, help="override the experiment's data folder")
    p.add_argument('--steps', type=int, default=101, help="thresholds evenly spaced over [0, 1] (default 101)")
    p.add_argument('--min_sizes', default=','.join(map(str, MIN_SIZES)), type=size_list,
                   help="at the best threshold, also try dropping salt regions below these pixel counts (predict*.py --min_size)")
    args = p.parse_args(argv)
    check_ranges(p, args, {'steps': (2, 10 ** 5)})
    return args


def size_list(text):
    try:
        sizes = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--min_sizes {text!r} is not a comma-separated list of pixel counts") from None
    if any(x < 0 for x in sizes):
        raise argparse.ArgumentTypeError("--min_sizes must be >= 0")
    return sizes


def main(argv=None):
    args = parse_args(argv)
    if len(args.masks_fn) == 1 and args.out is None:
        return single(masks_file(args.masks_fn[0]), args.data_dir, args.steps, args.min_sizes)
    record = out_of_fold(args.masks_fn, args.data_dir, args.steps, args.min_sizes, args.out)
    return record['threshold'], record['score']


if __name__ == '__main__':
    run_cli(main)
