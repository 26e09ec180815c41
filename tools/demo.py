"""The whole pipeline on generated demo data, on the CPU, in a few minutes.

    make demo        (or: python3 tools/demo.py)

Generates a seismic-looking data set in the competition's layout (demo_data/), then runs the
same commands a user runs on the real data — stack, folds, train, threshold search, TTA
prediction — and scores the submission on held-out demo images whose masks it knows, next to
the all-empty answer it has to beat.
"""
import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--minutes', type=float, default=3.0, help="training budget in minutes (default 3)")
    p.add_argument('--epochs', type=int, default=None,
                   help="train this many epochs instead of for --minutes: the same work however busy the machine is")
    p.add_argument('--n_train', type=int, default=800)
    p.add_argument('--n_test', type=int, default=200)
    p.add_argument('--data', default='demo_data', help="where the demo data goes (default demo_data/)")
    p.add_argument('--exp', default='experiments/demo', help="experiment folder (default experiments/demo)")
    return p.parse_args(argv)


def run(cmd):
    """Run one pipeline command as a user would (from the repo root), echoing it.

    Its output is shown line by line as it comes (the epochs of a training run as they end) and
    its stdout is also returned.
    """
    print(f"\n$ {cmd}", flush=True)
    lines = []
    with subprocess.Popen([sys.executable] + shlex.split(cmd)[1:], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          env=dict(os.environ, PYTHONUNBUFFERED='1')) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    if proc.returncode:
        raise SystemExit(f"demo: step failed with exit code {proc.returncode}: {cmd}")
    return ''.join(lines)


def write_all_empty(submission, out):
    """The same ids with no salt anywhere: the baseline the demo must beat."""
    import pandas as pd
    frame = pd.read_csv(ROOT / submission, dtype=str, keep_default_na=False)
    frame['rle_mask'] = ''
    frame.to_csv(ROOT / out, index=False)


def main(argv=None):
    args = parse_args(argv)
    data, exp = args.data, args.exp
    run(f"python3 tools/synthetic.py --out {data} --n_train {args.n_train} --n_test {args.n_test} --seed 0 --overwrite")
    run(f"python3 utils/stack_and_save.py --data_dir {data}")
    run(f"python3 utils/make_folds.py --p {data}/train.csv --n 5")
    # bf16 autocast where the CPU runs it natively (AMX): more epochs in the same minutes
    from net.runtime import cpu_has_native_bf16
    amp = '--amp bf16 ' if cpu_has_native_bf16() else ''
    budget = (f"--n_epochs {args.epochs} --scheduler cosine " if args.epochs else
              f"--n_epochs 1000 --max_minutes {args.minutes} --schedule_by time ")
    run(f"python3 train.py --arch unet_lite --loss BCE --optimizer adam_1e-3 --batch_size 16 {amp}{budget}"
        f"--train_augs train_128_v3 --val_augs val_128 --val_transforms crop_from_128 "
        f"--fold 0 --data_dir {data} --experiment_dir {exp} --overwrite")
    run(f"python3 optimize_threshold.py --masks_fn {exp}")
    submission = f"{exp}/predictions/demo_submission.csv"
    run(f"python3 predict_tta.py --snapshot {exp} --th auto --tta null_hflip {amp}--out {submission}")
    empty = f"{exp}/predictions/all_empty.csv"
    write_all_empty(submission, empty)
    baseline = run(f"python3 tools/evaluate.py --submission {empty} --truth {data}/test_truth.csv")
    final = run(f"python3 tools/evaluate.py --submission {submission} --truth {data}/test_truth.csv")
    ours = float(final.strip().splitlines()[-1].split()[-1])
    floor = float(baseline.strip().splitlines()[-1].split()[-1])
    print(f"\ndemo done: held-out score {ours:.4f} (all-empty answer: {floor:.4f})\nsubmission: {submission}")
    return ours, floor


if __name__ == '__main__':
    main()
