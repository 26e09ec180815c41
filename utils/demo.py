"""The whole pipeline on generated demo data, on the CPU, in a few minutes.

    make demo        (or: python3 utils/demo.py)

Generates a seismic-looking data set in the competition's layout (demo_data/), then runs the
same commands a user runs on the real data — stack, folds, train, threshold search, TTA
prediction — and scores the submission on held-out demo images whose masks it knows.
"""
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = 'demo_data'
EXP = 'experiments/demo'


def run(cmd):
    print(f"\n$ {cmd}", flush=True)
    done = subprocess.run([sys.executable] + shlex.split(cmd)[1:], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=None)
    sys.stdout.write(done.stdout)
    if done.returncode:
        raise SystemExit(f"demo: step failed with exit code {done.returncode}: {cmd}")
    return done.stdout


def main(minutes=3.0, epochs=40):
    run(f"python3 utils/synthetic.py --out {DATA} --n_train 800 --n_test 200 --seed 0 --overwrite")
    run(f"python3 utils/stack_and_save.py --data_dir {DATA}")
    run(f"python3 utils/make_folds.py --p {DATA}/train.csv --n 5")
    run(f"python3 train.py --arch unet_lite --loss bce_lovasz --optimizer adam_1e-3 --scheduler cosine "
        f"--batch_size 16 --n_epochs {epochs} --max_minutes {minutes} --schedule_by time "
        f"--train_augs train_128_v3 --val_augs val_128 --val_transforms crop_from_128 "
        f"--fold 0 --data_dir {DATA} --pretrained none --experiment_dir {EXP} --overwrite")
    snaps = sorted((ROOT / EXP / 'snapshots').glob('epoch_*'),
                   key=lambda p: (float(p.name.rsplit('iout_', 1)[1]), int(p.name.split('.')[0][6:])))
    best = snaps[-1].relative_to(ROOT)
    out = run(f"python3 optimize_threshold.py --masks_fn {best.parent}/val_masks_{best.name}.npy")
    th = out.strip().splitlines()[-1].split()[2].rstrip(':')
    sub = f"{EXP}/predictions/demo_submission.csv"
    run(f"python3 predict_tta.py --snapshot {best} --th {th} --tta null_hflip --out {sub}")
    empty = write_empty(sub)
    run(f"python3 utils/evaluate.py --submission {empty} --truth {DATA}/test_truth.csv")
    final = run(f"python3 utils/evaluate.py --submission {sub} --truth {DATA}/test_truth.csv")
    print(f"\ndemo done: held-out {final.strip().splitlines()[-1]} (the all-empty answer is scored just above); "
          f"submission: {sub}")


def write_empty(sub):
    """An all-empty submission of the same ids: the baseline the demo must beat."""
    import pandas as pd
    frame = pd.read_csv(ROOT / sub, dtype=str, keep_default_na=False)
    frame['rle_mask'] = ''
    path = f"{EXP}/predictions/all_empty.csv"
    frame.to_csv(ROOT / path, index=False)
    return path


if __name__ == '__main__':
    main()
