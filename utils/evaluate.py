"""Score a submission CSV against labeled rle masks with the competition's metric.

    python3 utils/evaluate.py --submission SUB.csv --truth TRUTH.csv

Both files are id,rle_mask. Every id of the truth must be in the submission. The score is the
last line printed.
"""
import sys
from pathlib import Path

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from utils.cli import Parser
from utils.data import read_csv
from utils.errors import UserError, run_cli
from utils.metric import image_scores
from utils.rle import rle_decode


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--submission', required=True)
    p.add_argument('--truth', required=True, help="id,rle_mask of the true masks (e.g. a held-out part of train.csv)")
    return p.parse_args(argv)


def decode_all(frame, path):
    out = np.empty((len(frame), 101, 101), np.uint8)
    for k, (i, r) in enumerate(zip(frame['id'], frame['rle_mask'])):
        try:
            out[k] = rle_decode(r)
        except ValueError as e:
            raise UserError(f"{path}: bad rle_mask for id {i}: {e}") from None
    return out


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    sub = read_csv(args.submission, 'submission', ['id', 'rle_mask'], "pass a CSV with columns id,rle_mask")
    truth = read_csv(args.truth, 'truth', ['id', 'rle_mask'], "pass a CSV with columns id,rle_mask")
    if sub['id'].duplicated().any():
        raise UserError(f"{args.submission} lists id {sub['id'][sub['id'].duplicated()].iloc[0]} twice; keep one row per id")
    sub = sub.set_index('id').reindex(truth['id'])
    missing = sub['rle_mask'].isna()
    if missing.any():
        raise UserError(f"{args.submission} has no row for {int(missing.sum())} ids of the truth "
                        f"(first: {sub.index[missing.to_numpy()][0]}); predict every id")
    pred = decode_all(sub.reset_index(), args.submission)
    true = decode_all(truth, args.truth)
    scores = image_scores(pred, true)
    empty = ~true.reshape(len(true), -1).any(1)
    print(f"images: {len(true)} ({int(empty.sum())} without salt)")
    if empty.any():
        print(f"score on images without salt: {scores[empty].mean():.4f}")
    if (~empty).any():
        print(f"score on images with salt: {scores[~empty].mean():.4f}")
    total = float(scores.mean())
    print(f"score: {total:.4f}")
    return total


if __name__ == '__main__':
    run_cli(main)
