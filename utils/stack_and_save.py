"""Stack the competition's PNGs into three arrays, so later steps read one file instead of 22000.

Writes, into --data_dir: train_images.npy and train_masks.npy (N, 101, 101) uint8 in the order
of train.csv (masks 0/1: any non-zero pixel of the 16-bit PNG is salt), and test_images.npy in
the order of sample_submission.csv.

    python3 utils/stack_and_save.py --data_dir path/to/unzipped/data
"""
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __name__ == '__main__':
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
from tqdm import tqdm

from utils.cli import Parser
from utils.data import SIZE, data_dir_checked, test_ids, train_ids
from utils.errors import UserError, run_cli
from utils.io import save_npy


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True, help="unzipped competition data (train.csv, train/, test/, ...)")
    p.add_argument('--workers', type=int, default=4, help="decode threads (default 4)")
    return p.parse_args(argv)


def read_png(path, binary):
    """One 101x101 PNG as uint8 (H, W): the gray channel of an image, or 0/1 for a mask."""
    if not path.is_file():
        what = 'mask' if binary else 'image'
        raise UserError(f"{what} missing: {path}; every id of the CSV needs one (is --data_dir the unzipped data?)")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UserError(f"cannot decode {path} (corrupt or not a PNG); replace it with the file from the competition download")
    if raw.ndim == 3:
        raw = raw[..., 0]  # the images are gray stored as three equal channels
    if raw.shape != (SIZE, SIZE):
        raise UserError(f"{path} is {raw.shape[1]}x{raw.shape[0]}, not 101x101; replace it with the file from the competition download")
    if binary:
        return (raw != 0).astype(np.uint8)
    if raw.dtype != np.uint8:
        raw = (raw >> 8).astype(np.uint8) if raw.dtype == np.uint16 else raw.astype(np.uint8)
    return raw


def stack(paths, binary, workers, desc):
    out = np.empty((len(paths), SIZE, SIZE), np.uint8)

    def work(k):
        out[k] = read_png(paths[k], binary)

    # cv2 releases the GIL while decoding, so threads decode in parallel without copies.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in tqdm(pool.map(work, range(len(paths)), chunksize=64), total=len(paths), desc=desc,
                      unit='png', leave=False, mininterval=0.5):
            pass
    return out


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    d = data_dir_checked(args.data_dir)
    tr, te = train_ids(d), test_ids(d)
    arrays = {
        'train_images.npy': stack([d / 'train' / 'images' / f'{i}.png' for i in tr], False, args.workers, 'train images'),
        'train_masks.npy': stack([d / 'train' / 'masks' / f'{i}.png' for i in tr], True, args.workers, 'train masks'),
        'test_images.npy': stack([d / 'test' / 'images' / f'{i}.png' for i in te], False, args.workers, 'test images'),
    }
    # Everything is decoded and checked before the first write, so a bad file leaves old arrays intact.
    for name, arr in arrays.items():
        save_npy(d / name, arr)
        print(f"wrote {d / name} {arr.shape}")
    return arrays


if __name__ == '__main__':
    run_cli(main)
