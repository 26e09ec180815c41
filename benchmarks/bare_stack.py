"""The least work stack_and_save.py does: a plain cv2.imread loop over every PNG, then three np.save.

    python benchmarks/bare_stack.py --data_dir D

Reads train.csv and sample_submission.csv (csv module), decodes every train image, train
mask and test image in one thread, keeps the gray channel (masks: non-zero is salt), and saves
train_images / train_masks / test_images as bare_*.npy in D. No checks, no progress bar.
"""
import argparse
import csv
import json
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

T_START = time.perf_counter()

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def ids(path):
    with open(path) as f:
        return [row['id'] for row in csv.DictReader(f)]


def read(paths, binary):
    out = np.empty((len(paths), 101, 101), np.uint8)
    for k, p in enumerate(paths):
        raw = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3:
            raw = raw[..., 0]
        out[k] = raw != 0 if binary else raw
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data_dir', required=True)
    args = p.parse_args()
    d = Path(args.data_dir)
    tr, te = ids(d / 'train.csv'), ids(d / 'sample_submission.csv')
    t_loop = time.perf_counter()
    arrays = {
        'bare_train_images.npy': read([f'{d}/train/images/{i}.png' for i in tr], False),
        'bare_train_masks.npy': read([f'{d}/train/masks/{i}.png' for i in tr], True),
        'bare_test_images.npy': read([f'{d}/test/images/{i}.png' for i in te], False),
    }
    for name, a in arrays.items():
        np.save(d / name, a)
    now = time.perf_counter()
    print(json.dumps({'loop_s': now - t_loop, 'setup_s': t_loop - T_START, 'pngs': 2 * len(tr) + len(te)}))


if __name__ == '__main__':
    main()
