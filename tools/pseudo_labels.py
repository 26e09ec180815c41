"""Pseudo-labels: a data folder whose training set is the labeled images plus the confident test masks.

    python3 tools/pseudo_labels.py --data_dir data --probs experiments/gpu.submission.npy \\
        --th auto --oof experiments/gpu.oof.best.json --out data_pseudo

--probs holds test-set probabilities (N, 101, 101) in sample_submission.csv order, as the predict
scripts and `train_folds.py --predict` save them beside their CSV. A test image is taken when its
prediction is confident: at most --max_uncertain of its pixels lie strictly between 1 - --confidence
and --confidence. Its mask is the prediction thresholded as the submission would be (--th,
--min_size). OUT then holds:

    train_images.npy, train_masks.npy   the labeled images, then the taken test images
    train.csv                           their ids and rle masks, in the same order
    train_with_folds.csv                DATA's folds, and fold -1 for every pseudo-labeled image:
                                        it trains in every fold and never validates, so the
                                        out-of-fold score stays a score on true labels
    test_images.npy, sample_submission.csv (and depths.csv)   as in DATA, to predict from OUT
    pseudo_labels.json                  what was taken, from which file, with which settings

Train on it with `train.py --data_dir OUT` (or `recipe.py --pseudo`).
"""
import os
import shutil
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

import numpy as np

from utils.cli import Parser, check_ranges, int_or_auto, probability
from utils.data import load_test_images, load_train_arrays, read_columns
from utils.errors import UserError, run_cli
from utils.io import check_output, load_npy, run_folder_of, save_json, save_npy, save_rows
from utils.rle import rle_encode
from utils.snapshots import read_found
from utils.submission import binarize, check_probs


def threshold_or_auto(text):
    return 'auto' if text.strip().lower() == 'auto' else probability(text)


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', default='data', help="the stacked competition data, with its folds file")
    p.add_argument('--folds_csv', default=None, help="default: DATA/train_with_folds.csv")
    p.add_argument('--probs', required=True, help="test-set probabilities (N, 101, 101) saved by the predict scripts")
    p.add_argument('--out', required=True, help="the new data folder (must not exist, unless --overwrite)")
    p.add_argument('--th', type=threshold_or_auto, default=0.5,
                   help="threshold of the pseudo masks, or auto: the one in --oof")
    p.add_argument('--min_size', type=int_or_auto, default=0, help="drop regions smaller than this, or auto (--oof)")
    p.add_argument('--oof', default=None, help="the .oof.best.json (or .best.json) that --th/--min_size auto read")
    p.add_argument('--confidence', type=probability, default=0.9,
                   help="a pixel is sure when its probability is >= this or <= 1 - this")
    p.add_argument('--max_uncertain', type=probability, default=0.01,
                   help="largest share of unsure pixels in an image that is taken")
    p.add_argument('--overwrite', action='store_true', help="replace the pseudo-label files of an existing --out")
    args = p.parse_args(argv)
    if not 0.5 < args.confidence <= 1:
        p.error("--confidence must lie in (0.5, 1]")
    if 'auto' in (args.th, args.min_size) and not args.oof:
        p.error("--th/--min_size auto need --oof (the .oof.best.json of train_folds.py or optimize_threshold.py)")
    if args.min_size != 'auto' and args.min_size < 0:
        p.error("--min_size must be at least 0")
    check_ranges(p, args, {'min_size': (0, 101 * 101)})
    return args


def uncertain_share(probs, confidence, chunk=2048):
    """Share of each image's pixels (N,) whose probability lies strictly between 1 - confidence and confidence."""
    out = np.empty(len(probs), np.float64)
    lo, hi = 1.0 - confidence, confidence
    for a in range(0, len(probs), chunk):
        p = np.asarray(probs[a:a + chunk], dtype=np.float32)
        out[a:a + len(p)] = ((p > lo) & (p < hi)).mean(axis=(1, 2))
    return out


def select(probs, confidence, max_uncertain, th, min_size):
    """(indices of the confident images, their binary masks uint8 (K, 101, 101))."""
    taken = np.flatnonzero(uncertain_share(probs, confidence) <= max_uncertain)
    masks = binarize(np.asarray(probs[taken], dtype=np.float32), th, min_size).astype(np.uint8)
    return taken, masks


def _link_or_copy(src, dst):
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def check_out(out, data):
    """The pseudo-labeled data folder `out` is a folder of its own: not the data folder `data`, nor inside it or
    inside a run's folder (recipe.py --pseudo checks its --pseudo_dir with this before the first stage)."""
    out, data = Path(out), Path(data)
    if out.resolve() == data.resolve():
        raise UserError(f"--out {out} is the data folder itself; pass a new folder, e.g. {data}_pseudo")
    if data.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the data folder {data}; pass a folder beside it, e.g. {data}_pseudo")
    run = run_folder_of(out / 'pseudo_labels.json')
    if run is not None:
        raise UserError(f"--out {out} is inside the run folder {run}, whose files train.py writes; pass a folder "
                        f"outside it, e.g. {data}_pseudo")


def main(argv=None):
    args = parse_args(argv)
    data, out = Path(args.data_dir), Path(args.out)
    check_out(out, data)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; pass another --out, or --overwrite to replace its pseudo-label files")
    th, min_size = args.th, args.min_size
    if 'auto' in (th, min_size):
        best_th, best_size = read_found(args.oof, "python3 train_folds.py ... (or optimize_threshold.py)")
        th = best_th if th == 'auto' else th
        min_size = best_size if min_size == 'auto' else min_size
    images, masks = load_train_arrays(data)
    fix = f"make it with: python3 utils/make_folds.py --p {data / 'train.csv'} --n 5"
    folds_csv = Path(args.folds_csv) if args.folds_csv else data / 'train_with_folds.csv'
    folds = read_columns(folds_csv, 'folds file', ['id', 'fold'], fix)
    rles = read_columns(data / 'train.csv', 'train.csv', ['id', 'rle_mask'],
                        "it comes with the competition data (pass the right --data_dir)")
    if sorted(folds['id']) != sorted(rles['id']):
        raise UserError(f"{folds_csv} does not list the ids of {data / 'train.csv'}; {fix}")
    test_images, test_ids = load_test_images(data)
    probs = load_npy(args.probs, 'test-set probabilities',
                     "python3 train_folds.py ... --predict (it saves them beside the submission)", mmap=True)
    check_probs(probs, args.probs, len(test_ids))
    taken, pseudo = select(probs, args.confidence, args.max_uncertain, th, min_size)
    ids = [test_ids[i] for i in taken]
    clash = sorted(set(ids) & set(rles['id']))
    if clash:
        raise UserError(f"test id {clash[0]} is also a training id; pass the test probabilities of this data folder")

    outputs = [out / n for n in ('train_images.npy', 'train_masks.npy', 'train.csv', 'train_with_folds.csv',
                                 'test_images.npy', 'sample_submission.csv', 'depths.csv', 'pseudo_labels.json')]
    for p in outputs:  # before the first write: none may be an input (or under a file)
        check_output(p)
    out.mkdir(parents=True, exist_ok=True)
    save_npy(out / 'train_images.npy', np.concatenate([images, np.asarray(test_images[taken])]))
    save_npy(out / 'train_masks.npy', np.concatenate([np.asarray(masks, np.uint8), pseudo]))
    new_rles = [rle_encode(m) for m in pseudo]
    save_rows(out / 'train.csv', ['id', 'rle_mask'], [*zip(rles['id'], rles['rle_mask']), *zip(ids, new_rles)])
    save_rows(out / 'train_with_folds.csv', ['id', 'fold'], [*zip(folds['id'], folds['fold']), *((i, -1) for i in ids)])
    for name in ('test_images.npy', 'sample_submission.csv', 'depths.csv'):
        if (data / name).is_file():
            _link_or_copy(data / name, out / name)
    empty = int((pseudo.reshape(len(pseudo), -1).max(axis=1) == 0).sum()) if len(pseudo) else 0
    record = {'probs': str(args.probs), 'data_dir': str(data), 'threshold': th, 'min_size': min_size,
              'confidence': args.confidence, 'max_uncertain': args.max_uncertain, 'labeled': len(images),
              'test_images': len(test_ids), 'taken': len(ids), 'taken_empty': empty, 'ids': ids}
    save_json(out / 'pseudo_labels.json', record)
    print(f"{out}: {len(images)} labeled images + {len(ids)} of {len(test_ids)} test images pseudo-labeled "
          f"({empty} empty) at threshold {th:.2f}, min size {min_size}; train with --data_dir {out}")
    return record


if __name__ == '__main__':
    run_cli(main)
