"""Predict the test images with one snapshot and test-time augmentation (TTA), then write a submission.

    python3 predict_tta.py --snapshot EXP/snapshots/epoch_... --th 0.5 --tta null_hflip

Each TTA view is predicted, mapped back exactly and averaged (net/tta.py lists the sets).
Otherwise the same as predict.py (--images DIR included).
"""
from net.inference import predict_args, predict_snapshot
from utils.errors import run_cli


def parse_args(argv=None):
    return predict_args(__doc__.split('\n')[0], argv, tta='null_hflip')


def main(argv=None):
    args = parse_args(argv)
    return predict_snapshot(args)


if __name__ == '__main__':
    run_cli(main)
