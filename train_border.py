"""Train a two-output model: the salt mask and its border (the mask's contour, not the image frame).

    python3 train_border.py --arch wide_resnet_border --loss boundary_bce --experiment_dir experiments/border_fold0 \
        --fold 0 --data_dir data

The same options and outputs as train.py; the targets are the mask and its border, and the loss
(boundary_bce or boundary_lovasz) supervises both. Predictions use the mask output; predict.py
also saves the border output of such a snapshot.
"""
from net.training import main as train_main
from net.training import parse_args as train_parse_args
from utils.errors import run_cli


def parse_args(argv=None):
    return train_parse_args(argv, border=True)


def main(argv=None):
    return train_main(argv, border=True)


if __name__ == '__main__':
    run_cli(main)
