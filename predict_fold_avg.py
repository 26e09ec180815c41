"""Average raw probability masks (of several folds or models) and write one submission.

    python3 predict_fold_avg.py fold0.npy fold1.npy fold2.npy --th 0.5 --data_dir data

Each file is (N, 101, 101) as saved by predict*.py for the same test images, in
sample_submission.csv order. The files are read memory-mapped and summed in chunks, so 18000
masks from many folds fit in little memory.
"""
from pathlib import Path

import numpy as np

from utils.cli import Parser, probability
from utils.errors import UserError, run_cli


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('masks', nargs='+', help="raw probability .npy files")
    p.add_argument('--th', type=probability, default=0.5)
    p.add_argument('--data_dir', default='data', help="folder with sample_submission.csv (default ./data)")
    p.add_argument('--min_size', type=int, default=0, help="drop predicted salt regions smaller than this many pixels")
    p.add_argument('--out', default='submission_fold_avg.csv')
    p.add_argument('--save_probs', action='store_true', help="also save the averaged probabilities beside the CSV (.npy)")
    return p.parse_args(argv)


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    from utils.data import test_ids
    from utils.io import load_npy, save_npy
    from utils.submission import OUT_ADVICE, check_probs, out_of_range, rle_column, write_rles

    out = Path(args.out)
    if out.suffix != '.csv':
        raise UserError(f"--out {out} must end in .csv")
    ids = test_ids(args.data_dir)
    arrays = []
    for f in args.masks:
        a = load_npy(f, 'probability masks', 'python3 predict.py --snapshot ...', mmap=True)
        check_probs(a, f, len(ids), scan=False)
        arrays.append(a)
    # One pass over the files, a chunk at a time: sum, check, average, encode. Only the rle strings
    # (and, with --save_probs, a float16 mean) outlive a chunk, and nothing is written before every
    # chunk has passed.
    chunk = 2048
    acc = np.empty((min(chunk, len(ids)), 101, 101), np.float32)
    mean16 = np.empty((len(ids), 101, 101), np.float16) if args.save_probs else None
    rles = []
    for a in range(0, len(ids), chunk):
        s = acc[:min(chunk, len(ids) - a)]
        with np.errstate(over='ignore', invalid='ignore'):  # judged below, in one line, not as warnings
            np.copyto(s, arrays[0][a:a + chunk])
            for x in arrays[1:]:
                np.add(s, x[a:a + chunk], out=s)
            # Probabilities in [0, 1] sum to [0, len(arrays)]; NaN, inf, values beyond float32 (inf by now)
            # and logits do not. As cheap as a NaN check; only on failure is each file read again, in
            # float64, to name the one at fault. (Values outside [0, 1] that other files make up for at
            # the same pixel go unnoticed.)
            ok = s.min() >= 0 and s.max() <= len(arrays)
        if not ok:
            raise next((e for f, x in zip(args.masks, arrays) if (e := out_of_range(x[a:a + chunk], f))),
                       UserError(f"the sum of {', '.join(args.masks)} is outside [0, {len(arrays)}]; pass raw "
                                 f"masks saved by predict*.py"))
        np.divide(s, len(arrays), out=s)
        rles.extend(rle_column(s, args.th, args.min_size))
        if mean16 is not None:
            mean16[a:a + len(s)] = s
    with OUT_ADVICE():
        if mean16 is not None:
            save_npy(out.with_suffix('.npy'), mean16)
        share = write_rles(out, ids, rles)
    print(f"averaged {len(arrays)} files; submission: {out} ({share:.1%} with salt at threshold {args.th})")
    return out


if __name__ == '__main__':
    run_cli(main)
