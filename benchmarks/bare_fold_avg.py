"""The least work predict_fold_avg.py does: average memory-mapped masks, threshold, run-length encode, write.

    python benchmarks/bare_fold_avg.py a.npy b.npy --data_dir D --out bare.csv [--th 0.5]

Averages in float32 chunks, accumulating in place, thresholds the float32 mean like the
pipeline, encodes with utils.rle.rle_encode and writes id,rle_mask with plain file writes. No
checks, no .npy of the mean, no pandas. Prints one JSON line with its own loop time.
"""
import argparse
import csv
import json
import time

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

T_START = time.perf_counter()

import numpy as np  # noqa: E402

from utils.rle import rle_encode  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('masks', nargs='+')
    p.add_argument('--data_dir', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--th', type=float, default=0.5)
    args = p.parse_args()
    with open(f'{args.data_dir}/sample_submission.csv') as f:
        ids = [row['id'] for row in csv.DictReader(f)]
    t_loop = time.perf_counter()
    arrays = [np.load(f, mmap_mode='r', allow_pickle=False) for f in args.masks]
    with open(args.out, 'w') as f:
        f.write('id,rle_mask\n')
        for a in range(0, len(ids), 2048):
            acc = np.zeros((min(2048, len(ids) - a), 101, 101), np.float32)
            for x in arrays:
                np.add(acc, x[a:a + 2048], out=acc)
            np.divide(acc, len(arrays), out=acc)
            for i, m in zip(ids[a:a + 2048], acc > args.th):
                f.write(f'{i},{rle_encode(m)}\n')
    now = time.perf_counter()
    print(json.dumps({'loop_s': now - t_loop, 'setup_s': t_loop - T_START, 'masks': len(ids)}))


if __name__ == '__main__':
    main()
