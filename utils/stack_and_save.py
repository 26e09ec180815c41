"""Stack the competition's PNGs into three arrays, so later steps read one file instead of 22000.

Writes, into --data_dir: train_images.npy and train_masks.npy (N, 101, 101) uint8 in the order
of train.csv (masks 0/1: any non-zero pixel of the 16-bit PNG is salt), and test_images.npy in
the order of sample_submission.csv. A folder without training data (no train.csv, train/images
or train/masks) gets test_images.npy alone, which is all that predict*.py needs.

    python3 utils/stack_and_save.py --data_dir path/to/unzipped/data
"""
if not __package__:  # run as a file, from the root or from inside utils/: see utils/_repo_root.py
    import _repo_root  # noqa: F401

from utils.cli import Parser, check_ranges
from utils.data import data_dir_checked, stack_pngs, test_ids, train_ids
from utils.errors import run_cli
from utils.io import check_output, release, save_npy


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True, help="unzipped competition data (train.csv, train/, test/, ...)")
    p.add_argument('--workers', type=int, default=4, help="decode threads (default 4)")
    args = p.parse_args(argv)
    check_ranges(p, args, {'workers': (1, 256)})
    return args


TRAIN_PARTS = ('train.csv', 'train/images', 'train/masks')


def main(argv=None):
    args = parse_args(argv)
    d = data_dir_checked(args.data_dir)
    te = test_ids(d)
    # Without any training part (a folder for inference only) the test set is stacked alone; with
    # some of them, what is missing is an error, as a half-copied download would be.
    test_only = not any((d / part).exists() for part in TRAIN_PARTS)
    arrays = {}
    if not test_only:
        tr = train_ids(d)
        arrays['train_images.npy'] = stack_pngs([d / 'train' / 'images' / f'{i}.png' for i in tr], False, args.workers,
                                                'train images')
        arrays['train_masks.npy'] = stack_pngs([d / 'train' / 'masks' / f'{i}.png' for i in tr], True, args.workers,
                                               'train masks')
    arrays['test_images.npy'] = stack_pngs([d / 'test' / 'images' / f'{i}.png' for i in te], False, args.workers,
                                           'test images')
    # Everything is decoded and checked before the first write, so a bad file leaves old arrays intact.
    for name in arrays:
        release(d / name)  # the stacked arrays are this command's outputs (the CSVs stay guarded)
        check_output(d / name)  # all of them may be written, before the first is
    for name, arr in arrays.items():
        save_npy(d / name, arr)
        print(f"wrote {d / name} {arr.shape}")
    if test_only:
        print(f"stacked the test images only: {d} has no training data ({', '.join(TRAIN_PARTS)}); "
              f"enough for predict*.py, not for training")
    return arrays


if __name__ == '__main__':
    run_cli(main)
