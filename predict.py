"""Predict the test images with one snapshot and write a submission CSV.

    python3 predict.py --snapshot experiments/wide_fold0 --th auto --min_size auto

--snapshot is a snapshot file (EXP/snapshots/epoch_*) or an experiment directory, which stands for
its best snapshot.

The architecture, input transform and back-transform come from the snapshot. Writes
EXP/predictions/<snapshot>.csv (id,rle_mask in sample_submission.csv order) and the raw
probabilities <snapshot>.npy (N, 101, 101) float16 beside it, for predict_fold_avg.py.
With --images DIR, the PNGs of DIR are predicted instead of the stacked test set (no training
data needed): EXP/predictions/<snapshot>.<DIR's name>.csv.
"""
from net.inference import predict_args, predict_snapshot
from utils.errors import run_cli


def parse_args(argv=None, tta=False):
    return predict_args(__doc__.split('\n')[0], argv, tta='null_hflip' if tta else None)


def main(argv=None, tta=False):
    args = parse_args(argv, tta)
    return predict_snapshot(args)


if __name__ == '__main__':
    run_cli(main)
