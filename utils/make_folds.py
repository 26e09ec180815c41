"""Add a `fold` column to train.csv and write it beside it as train_with_folds.csv.

    python3 utils/make_folds.py --p path/to/train.csv --n 10

Folds are stratified by salt coverage by default, so every fold has the same mix of empty,
small and large masks; `--stratify depth` balances depth instead and `--stratify none` is the
original pipeline's plain random split.

`--method deal` (the default) sorts the images by coverage or depth and deals each run of n
images to the n folds in random order: the folds this script has always written, so a seed
and options give the same folds as before. `--method sklearn` uses scikit-learn's
StratifiedKFold on coverage classes (ceil(10 x coverage): 0 for empty masks, then 10 %-steps)
or depth deciles, and KFold for `--stratify none`. StratifiedKFold cannot reproduce the dealt
folds, which is why it is not the default.
"""
import os
import warnings
from pathlib import Path

if not __package__:  # run as a file, from the root or from inside utils/: see utils/_repo_root.py
    import _repo_root  # noqa: F401

import numpy as np

from utils.cli import SEED_RANGE, Parser, check_ranges
from utils.data import read_csv
from utils.errors import UserError, run_cli
from utils.io import FOLDS_CSV, guard_data_dir, release, save_csv


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--p', required=True, help="path to train.csv")
    p.add_argument('--n', type=int, default=10, help="number of folds (default 10)")
    p.add_argument('--stratify', default='coverage', choices=['coverage', 'depth', 'none'])
    p.add_argument('--method', default='deal', choices=['deal', 'sklearn'],
                   help="deal: sort by the key and deal runs of n images to the folds (default; the folds of "
                        "earlier versions); sklearn: scikit-learn's StratifiedKFold on coverage classes or depth "
                        "deciles (KFold for --stratify none)")
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--out', default=None, help="output CSV (default: train_with_folds.csv beside train.csv)")
    args = p.parse_args(argv)
    check_ranges(p, args, {'n': (2, 10 ** 6), 'seed': SEED_RANGE})
    return args


def coverage_of(rles, path='train.csv', ids=None):
    """Fraction of salt pixels per rle string (the sum of run lengths over 101*101); a run that is not
    start/length pairs of whole numbers is a UserError naming the file and the id."""
    cov = np.zeros(len(rles))
    for k, r in enumerate(rles):
        nums = str(r).split()
        try:
            values = [int(x) for x in nums]
        except ValueError:
            values = None
        if values is None or len(values) % 2 or any(v < 1 for v in values):
            who = f"id {ids[k]}" if ids is not None else f"row {k + 2}"
            raise UserError(f"{path}: the rle_mask of {who} ({str(r)[:40]!r}) is not pairs of whole numbers "
                            f"start length; correct that row (the competition's train.csv has it right), or pass "
                            f"--stratify none")
        cov[k] = sum(values[1::2]) / (101 * 101)
    return cov


def assign_folds(key, n, rng):
    """Folds balanced over `key`: sort by key (random tie-break), then deal each run of n at random."""
    order = np.lexsort((rng.random(len(key)), key))
    folds = np.empty(len(key), np.int64)
    for start in range(0, len(key), n):
        block = order[start:start + n]
        folds[block] = rng.permutation(n)[:len(block)]
    return folds


def coverage_classes(cov):
    """Coverage classes 0..10: 0 for an empty mask, k for a coverage in ((k-1)/10, k/10]."""
    return np.ceil(np.asarray(cov) * 10).astype(np.int64)


def depth_bins(z, n_bins=10):
    """Depth deciles 0..n_bins-1 (quantile bins, so each holds about as many images)."""
    edges = np.quantile(z, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, z, side='right')


def sklearn_folds(labels, n, n_rows, seed):
    """Folds from scikit-learn, shuffled by `seed`: StratifiedKFold on `labels`, or KFold when labels is None."""
    from sklearn.model_selection import KFold, StratifiedKFold
    folds = np.empty(n_rows, np.int64)
    splitter = (KFold if labels is None else StratifiedKFold)(n_splits=n, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class with fewer images than folds is spread as far as it goes; sklearn would warn about it.
        warnings.simplefilter('ignore', UserWarning)
        try:
            for k, (_, va) in enumerate(splitter.split(np.zeros(n_rows), labels)):
                folds[va] = k
        except ValueError as e:
            raise UserError(f"scikit-learn cannot make {n} folds of these images ({str(e).splitlines()[0].rstrip('.')}); "
                            f"pass a smaller --n or --method deal") from None
    return folds


def main(argv=None):
    args = parse_args(argv)
    src = Path(args.p)
    fix = "pass --p with the competition's train.csv"
    frame = read_csv(src, 'train.csv', ['id'], fix)
    guard_data_dir(src.parent)  # its folder's stacked arrays and competition CSVs are no output of this
    if args.n < 2 or args.n > len(frame):
        raise UserError(f"--n {args.n} folds does not fit {len(frame)} images; pass 2 <= --n <= {len(frame)}")
    key = None
    if args.stratify == 'coverage':
        if 'rle_mask' not in frame.columns:
            raise UserError(f"{src} has no rle_mask column to stratify by coverage; pass --stratify none")
        key = coverage_of(frame['rle_mask'], src, list(frame['id']))
    elif args.stratify == 'depth':
        depths = read_csv(src.parent / 'depths.csv', 'depths.csv', ['id', 'z'],
                          "it comes with the competition data; or pass --stratify coverage")
        zs = {}
        for i, v in zip(depths['id'], depths['z']):
            try:
                zs[i] = float(v)
            except (TypeError, ValueError):
                zs[i] = float('nan')
            if not np.isfinite(zs[i]):
                raise UserError(f"{src.parent / 'depths.csv'}: the depth of id {i} ({str(v)[:20]!r}) is not a number; "
                                f"correct that row (it comes with the competition data), or pass --stratify coverage")
        z = frame['id'].map(zs)
        if z.isna().any():
            raise UserError(f"depths.csv has no depth for {int(z.isna().sum())} ids of {src}; pass --stratify coverage")
        key = z.to_numpy(float)
    if args.method == 'sklearn':
        labels = None if key is None else coverage_classes(key) if args.stratify == 'coverage' else depth_bins(key)
        folds = sklearn_folds(labels, args.n, len(frame), args.seed)
    else:
        rng = np.random.default_rng(args.seed)
        folds = rng.permutation(len(frame)) % args.n if key is None else assign_folds(key, args.n, rng)
    out = frame.copy()
    out['fold'] = folds
    dst = Path(args.out) if args.out else src.parent / FOLDS_CSV
    if dst.name == FOLDS_CSV and os.path.realpath(dst) != os.path.realpath(src):
        release(dst)  # the data folder's folds file is this command's output (its other files stay guarded)
    save_csv(dst, out)
    sizes = np.bincount(folds, minlength=args.n)
    print(f"wrote {dst}: {args.n} folds ({args.stratify}, {args.method}), sizes {sizes.min()}-{sizes.max()}")
    return dst


if __name__ == '__main__':
    run_cli(main)
