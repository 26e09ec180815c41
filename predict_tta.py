"""Predict the test images with one snapshot and test-time augmentation (TTA), then write a submission.

    python3 predict_tta.py --snapshot EXP/snapshots/epoch_... --th 0.5 --tta null_hflip

Each TTA view is predicted, mapped back exactly and averaged (net/tta.py lists the sets).
Otherwise the same as predict.py.
"""
from predict import main as predict_main
from predict import parse_args as predict_parse_args
from utils.errors import run_cli


def parse_args(argv=None):
    return predict_parse_args(argv, tta=True)


def main(args=None):
    args = args if args is not None and not isinstance(args, list) else parse_args(args)
    return predict_main(args, tta=True)


if __name__ == '__main__':
    run_cli(main)
