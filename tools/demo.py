"""The whole pipeline on generated demo data, on the CPU, in about five minutes.

    make demo        (or: python3 tools/demo.py)

Generates a seismic-looking data set in the competition's layout (demo_data/), then runs the
same commands a user runs on the real data — stack, folds, train, threshold search, TTA
prediction — and scores the submission on held-out demo images whose masks it knows, next to
the all-empty answer it has to beat.

The training budget is a number of epochs, fixed before training starts: a few timed training
steps on this CPU, in the precision it runs natively, say how many epochs fit in --minutes, and
the learning rate follows a cosine over exactly those epochs. The demo prints that choice.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# The demo's model and training: the recipe's heads (deep supervision and a salt head) at half
# width, BCE on every head, reflect-padded to 112 px.
ARCH = 'unet_plain_ds_w8'
TRAIN = (f"--arch {ARCH} --loss combined_bce --optimizer adam_1e-3 --batch_size 16 --train_augs train_112_v3 "
         "--scheduler cosine")
SIZE, BATCH = 112, 16
# Epochs the budget may give: fewer leaves the model unconverged, more gains little on the demo set.
MIN_EPOCHS, MAX_EPOCHS = 8, 40
# An epoch costs more than its bare training steps (augmentation, validation, snapshots); measured
# on the demo set, see benchmarks/results.md.
OVERHEAD = 1.15


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--minutes', type=float, default=4.5,
                   help="training budget in minutes, turned into a number of epochs before training (default 4.5)")
    p.add_argument('--epochs', type=int, default=None,
                   help="train this many epochs, without timing the CPU: the same work on every machine")
    p.add_argument('--n_train', type=int, default=800)
    p.add_argument('--n_test', type=int, default=200)
    p.add_argument('--data', default='demo_data', help="where the demo data goes (default demo_data/)")
    p.add_argument('--exp', default='experiments/demo', help="experiment folder (default experiments/demo)")
    args = p.parse_args(argv)
    if not args.minutes > 0:
        p.error("--minutes must be positive")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.n_train < 20 or args.n_test < 1:
        p.error("--n_train must be at least 20 and --n_test at least 1")
    return args


def cpu_class():
    """What the CPU offers for training, from its flags: 'AMX', 'AVX-512 BF16', 'AVX-512' or 'AVX2' (or older)."""
    from net.runtime import cpu_flags
    flags = cpu_flags()
    if flags is None:
        return 'unknown'
    for flag, name in (('amx_bf16', 'AMX'), ('avx512_bf16', 'AVX-512 BF16'), ('avx512f', 'AVX-512'),
                       ('avx2', 'AVX2')):
        if flag in flags:
            return name
    return 'pre-AVX2'


def seconds_per_epoch(n_images, bf16, steps=5, warmup=2):
    """Time `steps` training steps of the demo's model on this CPU (after `warmup` untimed ones) and
    scale the median step to an epoch of `n_images` images. The median, not the mean: one step slowed
    by something else on the machine (a process starting, the page cache filling) moves it little."""
    import statistics

    import torch

    from net.losses import build_loss
    from net.models import build_model
    from net.runtime import setup_runtime

    rt = setup_runtime('cpu', amp='bf16' if bf16 else 'off')
    torch.manual_seed(0)
    model = build_model(ARCH)
    loss_fn = build_loss('combined_bce')
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = (torch.rand(BATCH, 1, SIZE, SIZE) > 0.7).float()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with rt.autocast():
            out = model(x)
        loss = loss_fn(out, {'mask': y})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * (n_images / BATCH) * OVERHEAD


def plan(args):
    """(epochs, amp option, the line that says what was chosen and why)."""
    from net.runtime import cpu_has_native_bf16
    bf16 = cpu_has_native_bf16()
    cpu = cpu_class()
    precision = ("bf16 autocast, which this CPU runs natively" if bf16 else
                 "fp32, since this CPU has no native bf16 (bf16 would be emulated and slower)")
    amp = '--amp bf16 ' if bf16 else ''
    what = f"{ARCH} at {SIZE} px, cosine over the epochs"
    if args.epochs:
        return args.epochs, amp, f"demo plan: {args.epochs} epochs as asked; {cpu} CPU, {precision}; {what}"
    n_fold_train = args.n_train - args.n_train // 5
    per_epoch = seconds_per_epoch(n_fold_train, bf16)
    fit = int(args.minutes * 60 // per_epoch)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, fit))
    why = (f"{fit} fit in {args.minutes:g} minutes" if MIN_EPOCHS <= fit <= MAX_EPOCHS else
           f"{fit} would fit in {args.minutes:g} minutes, {'capped' if fit > MAX_EPOCHS else 'raised'} to "
           f"{'the most the demo set needs' if fit > MAX_EPOCHS else 'the fewest that learn'}")
    return epochs, amp, (f"demo plan: {cpu} CPU, {precision}; an epoch of {n_fold_train} images takes about "
                         f"{per_epoch:.0f} s here, so {epochs} epochs ({why}); {what}")


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


def check_exp(exp, data):
    """The demo trains with --overwrite: --exp may hold only a run of its own data folder, never another run."""
    from utils.checkpoint import read_config
    from utils.errors import UserError
    config = ROOT / exp / 'train_config.json'
    if not config.is_file():
        return
    try:
        trained_on = read_config(config, needs=('data_dir',))['data_dir']
    except UserError:  # not a readable run config: not the demo's either
        trained_on = None
    if trained_on is None or Path(str(trained_on)).resolve() != (ROOT / data).resolve():
        raise SystemExit(f"demo: error: --exp {exp} holds a run on {trained_on}, not on the demo's {data}, and the demo "
                         f"would replace it (it trains with --overwrite); pass another --exp")


def main(argv=None):
    args = parse_args(argv)
    data, exp = args.data, args.exp
    check_exp(exp, data)
    t0 = time.monotonic()
    run(f"python3 tools/synthetic.py --out {data} --n_train {args.n_train} --n_test {args.n_test} --seed 0 --overwrite")
    run(f"python3 utils/stack_and_save.py --data_dir {data}")
    run(f"python3 utils/make_folds.py --p {data}/train.csv --n 5")
    epochs, amp, line = plan(args)
    print(f"\n{line}", flush=True)
    run(f"python3 train.py {TRAIN} {amp}--n_epochs {epochs} --fold 0 --data_dir {data} --experiment_dir {exp} "
        f"--overwrite")
    run(f"python3 optimize_threshold.py --masks_fn {exp}")
    submission = f"{exp}/predictions/demo_submission.csv"
    run(f"python3 predict_tta.py --snapshot {exp} --th auto --min_size auto --tta null_hflip {amp}--out {submission}")
    empty = f"{exp}/predictions/all_empty.csv"
    write_all_empty(submission, empty)
    baseline = run(f"python3 tools/evaluate.py --submission {empty} --truth {data}/test_truth.csv")
    final = run(f"python3 tools/evaluate.py --submission {submission} --truth {data}/test_truth.csv")
    ours = float(final.strip().splitlines()[-1].split()[-1])
    floor = float(baseline.strip().splitlines()[-1].split()[-1])
    print(f"\n{line}")
    print(f"demo done: held-out score {ours:.4f} (all-empty answer: {floor:.4f})\nsubmission: {submission}; "
          f"{(time.monotonic() - t0) / 60:.1f} minutes in all")
    return ours, floor


if __name__ == '__main__':
    main()
