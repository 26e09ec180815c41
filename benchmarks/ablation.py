"""Ablation on the real data: each row trains fold 0 for the same time budget and is scored on its validation part.

    python3 benchmarks/ablation.py --data_dir data --minutes 5 [--rows base,bce,...] [--out benchmarks/ablation.md]

DATA_DIR must be stacked and folded (5 folds, coverage-stratified: utils/make_folds.py --n 5).
For every row it prints the training command, then the fold-0 validation score of the best
snapshot at threshold 0.5, at the best threshold, and with hflip TTA at that threshold. Rows
that change only prediction (TTA, small-region removal) reuse the base row's snapshot.
"""
import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = ('--arch unet_lite --loss bce_lovasz --optimizer adam_1e-3 --batch_size 16 --train_augs train_128_v3 '
        '--val_augs val_128 --val_transforms crop_from_128 --pretrained none --schedule_by time --n_epochs 10000')
ROWS = {
    'base': ('unet_lite, BCE + Lovasz, reflect pad to 128', ''),
    'bce': ('loss: BCE only', '--loss BCE'),
    'lovasz': ('loss: Lovasz only', '--loss lovasz'),
    'lovasz_sym': ('loss: symmetric Lovasz + BCE', '--loss BCE_lovasz_symmetric'),
    'resize': ('input: resize to 128 instead of pad', '--train_augs train_128_v1 --val_augs val_128_resize --val_transforms resize_from_any'),
    'w32': ('width: unet_lite_w32 (2x channels)', '--arch unet_lite_w32'),
    'ds': ('deep supervision + salt head (unet_lite_ds, combined)', '--arch unet_lite_ds --loss combined'),
    'bce_then_lovasz': ('loss: BCE for 2/3 of the budget, then Lovasz (--init) for 1/3', 'two stages'),
    'resnet34': ('encoder: unet_resnet34_v1 (stride-4 stem, 24M params)', '--arch unet_resnet34_v1'),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True)
    p.add_argument('--minutes', type=float, default=5.0, help="training budget of every row")
    p.add_argument('--rows', default='base,bce,lovasz,resize,ds,w32', help=f"comma list of: {', '.join(ROWS)}")
    p.add_argument('--exp_root', default='experiments/ablation')
    p.add_argument('--out', default='benchmarks/ablation.md')
    return p.parse_args(argv)


def best_snapshot(exp):
    snaps = [p for p in (exp / 'snapshots').glob('epoch_*') if p.suffix != '.npy']
    return max(snaps, key=lambda p: (float(p.name.rsplit('iout_', 1)[1]), int(p.name.split('.')[0][len('epoch_'):])))


def validation_scores(snapshot, data_dir):
    """(score at 0.5, best threshold, score there, hflip-TTA score there, best min_size and its score)."""
    import numpy as np

    from net.engine import predict_probs, setup_runtime
    from net.inference import model_from_snapshot, transforms_for
    from net.tta import TTAS
    from optimize_threshold import true_masks_for
    from utils.data import fold_indices, load_train_arrays
    from utils.metric import score, threshold_sweep
    from utils.submission import binarize

    probs = np.load(snapshot.parent / f'val_masks_{snapshot.name}.npy')
    true = true_masks_for(snapshot.parent / f'val_masks_{snapshot.name}.npy', data_dir)
    ths = np.linspace(0, 1, 101)
    sweep = threshold_sweep(probs, true, ths)
    b = int(np.argmax(sweep))
    rt = setup_runtime('cpu')
    model, snap = model_from_snapshot(snapshot, rt)
    val_aug, back = transforms_for(snap)
    images, _ = load_train_arrays(Path(data_dir))
    _, va = fold_indices(Path(data_dir), snap['config']['folds_csv'], snap['config']['fold'])
    tta, _ = predict_probs(model, images[va], val_aug, back, TTAS['null_hflip'], rt, 64, out_dtype=np.float32)
    tta_sweep = threshold_sweep(tta['mask'], true, ths)
    tb = int(np.argmax(tta_sweep))
    sizes = {m: score(binarize(tta['mask'], ths[tb], m), true) for m in (0, 10, 20, 40, 80)}
    m = max(sizes, key=sizes.get)
    return dict(at05=float(sweep[50]), th=float(ths[b]), best=float(sweep[b]), tta_th=float(ths[tb]),
                tta=float(tta_sweep[tb]), min_size=m, post=sizes[m])


def train(cmd):
    print(f"\n$ python3 train.py {cmd}", flush=True)
    return subprocess.run([sys.executable, 'train.py'] + shlex.split(cmd), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def main(argv=None):
    args = parse_args(argv)
    lines = [f"Fold 0 of a 5-fold coverage-stratified split of {args.data_dir}, {args.minutes:g} min of training "
             f"per row on this machine, from scratch. Base command: `python3 train.py {BASE} --max_minutes "
             f"{args.minutes:g} --fold 0 --data_dir {args.data_dir}` plus the row's options.", "",
             "| row | options | epochs | val score @0.5 | best th | score @best th | + hflip TTA | + drop regions < N px |",
             "|---|---|---|---|---|---|---|---|"]
    for key in args.rows.split(','):
        title, extra = ROWS[key]
        exp = ROOT / args.exp_root / key
        cmd = (f"{BASE} {extra} --max_minutes {args.minutes} --fold 0 --data_dir {args.data_dir} "
               f"--experiment_dir {exp} --overwrite")
        t0 = time.time()
        if key == 'bce_then_lovasz':
            first = exp.with_name(key + '_bce')
            r = train(f"{BASE} --loss BCE --max_minutes {args.minutes * 2 / 3} --fold 0 --data_dir {args.data_dir} "
                      f"--experiment_dir {first} --overwrite")
            if r.returncode == 0:
                cmd = (f"{BASE} --loss lovasz --optimizer adam_1e-4 --init {best_snapshot(first)} "
                       f"--max_minutes {args.minutes / 3} --fold 0 --data_dir {args.data_dir} --experiment_dir {exp} --overwrite")
                epochs = sum(1 for line in r.stdout.splitlines() if line.startswith('epoch '))
                r = train(cmd)
                r.stdout = '\n'.join(['epoch'] * epochs) + '\n' + r.stdout
        else:
            r = train(cmd)
        if r.returncode:
            print(r.stdout[-2000:])
            lines.append(f"| {title} | `{extra}` | failed | | | | | |")
            continue
        epochs = sum(1 for line in r.stdout.splitlines() if line.startswith('epoch '))
        s = validation_scores(best_snapshot(exp), args.data_dir)
        row = (f"| {title} | `{extra or '(base)'}` | {epochs} | {s['at05']:.4f} | {s['th']:.2f} | {s['best']:.4f} | "
               f"{s['tta']:.4f} (th {s['tta_th']:.2f}) | {s['post']:.4f} (N={s['min_size']}) |")
        print(row, f"({(time.time() - t0) / 60:.1f} min)", flush=True)
        lines.append(row)
        Path(ROOT / args.out).write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
