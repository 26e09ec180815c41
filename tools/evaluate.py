"""Score a submission CSV against labeled rle masks with the competition's metric.

    python3 tools/evaluate.py --submission SUB.csv --truth TRUTH.csv

Both files are id,rle_mask (columns found by name), one row per id. Every id of the truth must be
in the submission; ids of the submission that the truth lacks are counted, not scored. A malformed
row or rle is an error, never a guess. A table breaks the score down by the salt coverage of the
true masks (empty, <10 %, 10-50 %, >50 %): images, mean score and share of the lost score of
each. The score is the last line printed.
"""

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

import numpy as np

from utils.cli import Parser
from utils.data import read_columns
from utils.errors import UserError, run_cli
from utils.metric import breakdown_table, coverage_breakdown, image_scores
from utils.rle import rle_decode


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--submission', required=True)
    p.add_argument('--truth', required=True, help="id,rle_mask of the true masks (e.g. a held-out part of train.csv)")
    return p.parse_args(argv)


def read_masks(path, what):
    """{id: rle} of an id,rle_mask CSV, every row checked: one field per column, a non-empty id, each id once."""
    fix = "pass a CSV with the header id,rle_mask and one row per image"
    cols = read_columns(path, what, ['id', 'rle_mask'], fix)
    rles = {}
    for line, (i, r) in enumerate(zip(cols['id'], cols['rle_mask']), 2):
        if not i.strip():
            raise UserError(f"{path}: the row on line {line} has an empty id; {fix}")
        if i in rles:
            raise UserError(f"{path} lists id {i} twice; keep one row per id")
        rles[i] = r
    return rles


def decode_all(rles, ids, path):
    out = np.empty((len(ids), 101, 101), np.uint8)
    for k, i in enumerate(ids):
        try:
            out[k] = rle_decode(rles[i])
        except ValueError as e:
            raise UserError(f"{path}: bad rle_mask for id {i}: {e}; write it as start/length pairs in "
                            f"increasing order, inside pixels 1..10201") from None
    return out


def main(argv=None):
    args = parse_args(argv)
    sub = read_masks(args.submission, 'submission')
    truth = read_masks(args.truth, 'truth')
    if not truth:
        raise UserError(f"{args.truth} has no rows; pass the true masks of the images to score")
    ids = list(truth)
    missing = [i for i in ids if i not in sub]
    if missing:
        raise UserError(f"{args.submission} has no row for {len(missing)} ids of the truth "
                        f"(first: {missing[0]}); predict every id")
    pred = decode_all(sub, ids, args.submission)
    true = decode_all(truth, ids, args.truth)
    extra = len(sub) - len(ids)
    if extra:
        print(f"{extra} ids of the submission are not in the truth: not scored")
    scores = image_scores(pred, true)
    total = float(scores.mean())
    print(f"images: {len(true)}")
    print(breakdown_table(coverage_breakdown(scores, true)))
    print(f"score: {total:.4f}")
    return total


if __name__ == '__main__':
    run_cli(main)
