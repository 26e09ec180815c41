"""Average raw probability masks (of several folds or models) and write one submission.

    python3 predict_fold_avg.py fold0.npy fold1.npy fold2.npy --th 0.5 --data_dir data

Each file is (N, 101, 101) as saved by predict*.py for the same test images, in
sample_submission.csv order. The files are read memory-mapped and summed in chunks, so 18000
masks from many folds fit in little memory.

`--th auto --min_size auto` take the out-of-fold threshold and small-region size that
`optimize_threshold.py --masks_fn EXP_fold0 EXP_fold1 ...` (or train_folds.py) saved: --oof
PATH, by default the .oof.best.json of the experiments the files belong to (e.g.
experiments/gpu.oof.best.json for experiments/gpu_fold*/predictions/*.npy).
"""
from pathlib import Path

from utils.checkpoint import find_config
from utils.cli import Parser, check_ranges, int_or_auto, probability_or_auto
from utils.errors import UserError, run_cli
from utils.snapshots import read_found
from utils.submission import fold_average
from utils.thresholds import default_oof_path


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('masks', nargs='+', help="raw probability .npy files")
    p.add_argument('--th', type=probability_or_auto, default=0.5,
                   help="probability threshold in [0, 1] (default 0.5), or auto: the out-of-fold one (--oof)")
    p.add_argument('--data_dir', default='data', help="folder with sample_submission.csv (default ./data)")
    p.add_argument('--min_size', type=int_or_auto, default=0,
                   help="drop predicted salt regions smaller than this many pixels, or auto: the out-of-fold size (--oof)")
    p.add_argument('--oof', default=None, metavar='PATH',
                   help="for --th/--min_size auto: the out-of-fold result of optimize_threshold.py with several "
                        "--masks_fn (default: PARENT/NAME.oof.best.json of the experiments the files are in, e.g. "
                        "experiments/gpu.oof.best.json for experiments/gpu_fold*/predictions/*.npy)")
    p.add_argument('--out', default='submission_fold_avg.csv')
    p.add_argument('--save_probs', action='store_true', help="also save the averaged probabilities beside the CSV (.npy)")
    args = p.parse_args(argv)
    if args.min_size != 'auto' and args.min_size < 0:
        p.error("--min_size must be at least 0")
    check_ranges(p, args, {'min_size': (0, 101 * 101)})
    return args


def oof_options(masks, th, min_size, oof=None):
    """Replace 'auto' threshold / min_size by the out-of-fold result (`oof`, or the experiments' default)."""
    if 'auto' not in (th, min_size):
        return th, min_size
    roots = [find_config(f)[1] for f in masks]
    if oof is None:
        if None in roots:
            stray = masks[roots.index(None)]
            raise UserError(f"--th/--min_size auto: {stray} is not in an experiment's folder, so its out-of-fold "
                            f"result is unknown; pass --oof PATH (optimize_threshold.py's .oof.best.json) or a number")
        oof = default_oof_path(sorted(set(roots)))
    dirs = ' '.join(str(r) for r in sorted(set(roots))) if None not in roots else 'EXP_fold0 EXP_fold1 ...'
    best_th, best_size = read_found(oof, f"python3 optimize_threshold.py --masks_fn {dirs}")
    th = best_th if th == 'auto' else th
    min_size = best_size if min_size == 'auto' else min_size
    print(f"from {oof}: --th {th:.2f} --min_size {min_size}")
    return th, min_size


def main(argv=None):
    args = parse_args(argv)
    if Path(args.out).suffix != '.csv':
        raise UserError(f"--out {args.out} must end in .csv")
    args.th, args.min_size = oof_options(args.masks, args.th, args.min_size, args.oof)
    share = fold_average(args.masks, args.data_dir, args.out, args.th, args.min_size, args.save_probs)
    print(f"averaged {len(args.masks)} files; submission: {args.out} ({share:.1%} with salt at threshold {args.th})")
    return Path(args.out)


if __name__ == '__main__':
    run_cli(main)
