"""train.py's two batch paths on one device: --loader device (resident fold, batched augmentation) vs prefetch.

    python3 benchmarks/bench_loader.py --data_dir DATA [--device cpu] [--rounds 3] [--limit 640]

DATA holds the stacked arrays and folds (utils/stack_and_save.py, utils/make_folds.py). Each
round runs train.py once per loader (the order alternates between rounds) for --epochs epochs
and reads the epoch times from the log (epochs after the first). Prints the median epoch time
of each path and the median per-round ratio; the faster path is the one `--loader auto` should
pick on that device (net/runtime.resolve_loader).
"""
import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(exp):
    with open(Path(exp) / 'logs' / 'log.csv') as f:
        secs = [float(r['seconds']) for r in csv.DictReader(f)]
    return statistics.median(secs[1:] or secs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True)
    p.add_argument('--device', default='cpu')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--epochs', type=int, default=3)
    p.add_argument('--limit', type=int, default=640, help="training images (validation: a quarter)")
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--amp', default='auto')
    p.add_argument('--arch', default='unet_plain_ds')
    p.add_argument('--loss', default='combined_bce')
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix='bench_loader_'))
    times = {'device': [], 'prefetch': []}
    for r in range(args.rounds):
        for loader in (('device', 'prefetch') if r % 2 == 0 else ('prefetch', 'device')):
            exp = work / f'{loader}_{r}'
            cmd = [sys.executable, 'train.py', '--arch', args.arch, '--loss', args.loss, '--optimizer', 'adam_1e-3',
                   '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms', 'crop_from_112',
                   '--pretrained', 'none', '--batch_size', str(args.batch_size), '--limit', str(args.limit),
                   '--n_epochs', str(args.epochs), '--data_dir', args.data_dir, '--device', args.device,
                   '--amp', args.amp, '--loader', loader, '--experiment_dir', str(exp)]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
            times[loader].append(epoch_seconds(exp))
            print(f"round {r}: {loader:8s} {times[loader][-1]:.2f} s/epoch", file=sys.stderr, flush=True)
    ratios = [d / q for d, q in zip(times['device'], times['prefetch'])]
    out = {'device': args.device, 'epoch_s_device': statistics.median(times['device']),
           'epoch_s_prefetch': statistics.median(times['prefetch']), 'device_over_prefetch': statistics.median(ratios),
           'rounds': times}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
