"""Ablation on the real data: each row trains fold 0 for the same time budget and is scored on its validation part.

    python3 benchmarks/ablation.py --data_dir data --minutes 7 [--jobs 2] [--rows base,bce,...] [--out benchmarks/ablation.md]

DATA_DIR must be stacked and folded (5 folds, coverage-stratified: utils/make_folds.py --n 5).
Every row is the base command plus the row's options, trained for --minutes on --threads
threads, --jobs rows at a time (the default, 2 rows on one thread each, keeps a 2-core machine
busy with no row disturbing the other's timing). For every row it prints the training command,
then the fold-0 validation score: of the best snapshot at threshold 0.5, at the best threshold,
with hflip TTA at its best threshold, plus the best removal of small regions, and, for models
with a salt/no-salt head, emptying the masks the head calls empty.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

BASE = ('--arch unet_plain --loss BCEDice --optimizer adam_1e-3 --batch_size 16 --train_augs train_112_v3 '
        '--val_augs val_112 --val_transforms crop_from_112 --pretrained none --schedule_by time --n_epochs 10000 '
        '--amp bf16')
# key: (what the row changes, options added to BASE). Special rows: then_lovasz (two stages),
# cycles (snapshot ensemble of each cycle's best), swa (the averaged model).
ROWS = {
    'base': ('unet_plain, BCE + Dice, reflect pad to 112, bf16 autocast', ''),
    'fp32': ('precision: fp32 instead of bf16 autocast', '--amp off'),
    'bce': ('loss: BCE', '--loss BCE'),
    'lovasz': ('loss: Lovasz hinge', '--loss lovasz'),
    'lovasz_sym': ('loss: BCE + symmetric Lovasz', '--loss BCE_lovasz_symmetric'),
    'then_lovasz': ('loss: BCE + Dice for 2/3 of the budget, then Lovasz (--init, adam_1e-4) for 1/3', 'two stages'),
    'pad128': ('input: reflect pad to 128', '--train_augs train_128_v3 --val_augs val_128 --val_transforms crop_from_128'),
    'resize128': ('input: resize to 128', '--train_augs train_128_v1 --val_augs val_128_resize --val_transforms resize_from_any'),
    'w8': ('width: unet_plain_w8 (8..128 channels)', '--arch unet_plain_w8'),
    'lite': ('encoder: unet_lite (strided residual stages, add-merge one-conv decoder)', '--arch unet_lite'),
    'resnet34': ('encoder: unet_resnet34_v1 (ResNet-34, stride-4 stem with max-pool)', '--arch unet_resnet34_v1'),
    'bce_lovasz_sum': ('loss: BCE + Lovasz (sum)', '--loss bce_lovasz'),
    'scse': ('decoder: scSE gates (unet_plain_scse)', '--arch unet_plain_scse'),
    'hyper': ('head: hypercolumn (unet_plain_hyper)', '--arch unet_plain_hyper'),
    'ds': ('deep supervision + salt/no-salt head (unet_plain_ds, BCE on every output)', '--arch unet_plain_ds --loss combined_bce'),
    'cycles': ('snapshot ensemble: 3 cosine cycles, mean of each cycle\'s best', '--cycles 3'),
    'swa': ('SWA over the last 30 % of the budget', '--swa 0.3'),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True)
    p.add_argument('--minutes', type=float, default=7.0, help="training budget of every row")
    p.add_argument('--rows', default=','.join(k for k in ROWS if k not in ('resnet34', 'bce_lovasz_sum', 'pad128')), help=f"comma list of: {', '.join(ROWS)}")
    p.add_argument('--jobs', type=int, default=2, help="rows trained at the same time")
    p.add_argument('--threads', type=int, default=1, help="torch threads of each row")
    p.add_argument('--exp_root', default='experiments/ablation')
    p.add_argument('--out', default='benchmarks/ablation.md')
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(',') if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; pick from {', '.join(ROWS)}")
    return args


def snapshots(d):
    from utils.snapshots import snapshots_in
    return [s.path for s in snapshots_in(d)]


def best_snapshot(d):
    from utils.snapshots import best_of, snapshots_in
    return best_of(snapshots_in(d)).path


def train(cmd, threads, log):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    full = f"{cmd} --threads {threads}"
    with open(log, 'w') as f:
        r = subprocess.run([sys.executable, 'train.py'] + shlex.split(full), cwd=ROOT, text=True, env=env,
                           stdout=f, stderr=subprocess.STDOUT)
    return r.returncode


def run_row(key, args):
    """Train one row; returns (key, command(s), the snapshot or snapshots to score, epochs) or an error."""
    title, extra = ROWS[key]
    exp = ROOT / args.exp_root / key
    exp.parent.mkdir(parents=True, exist_ok=True)
    common = f"--fold 0 --data_dir {args.data_dir} --overwrite"
    if key == 'then_lovasz':
        first = exp.with_name(key + '_stage1')
        c1 = f"{BASE} --max_minutes {args.minutes * 2 / 3:.3f} {common} --experiment_dir {first}"
        if train(c1, args.threads, first.with_suffix('.log')):
            return key, [c1], None, 0
        e1 = _epochs(first)
        c2 = (f"{BASE} --loss lovasz --optimizer adam_1e-4 --init {best_snapshot(first / 'snapshots')} "
              f"--max_minutes {args.minutes / 3:.3f} {common} --experiment_dir {exp}")
        if train(c2, args.threads, exp.with_suffix('.log')):
            return key, [c1, c2], None, e1
        return key, [c1, c2], [best_snapshot(exp / 'snapshots')], e1 + _epochs(exp)
    cmd = f"{BASE} {extra} --max_minutes {args.minutes:g} {common} --experiment_dir {exp}"
    if train(cmd, args.threads, exp.with_suffix('.log')):
        return key, [cmd], None, 0
    if key == 'cycles':
        snaps = [best_snapshot(d) for d in sorted((exp / 'snapshots').glob('cycle_*'))]
    elif key == 'swa':
        snaps = snapshots(exp / 'snapshots' / 'swa')
    else:
        snaps = [best_snapshot(exp / 'snapshots')]
    return key, [cmd], snaps, _epochs(exp)


def _epochs(exp):
    import pandas as pd
    return len(pd.read_csv(exp / 'logs' / 'log.csv'))


def validation_scores(snaps, data_dir):
    """Scores of the mean of `snaps` on fold 0's validation images: dict of the table's columns."""
    import numpy as np
    import torch

    from net.inference import predict_probs
    from net.inference import model_from_snapshot, transforms_for
    from net.loader import float_input
    from net.runtime import setup_runtime
    from net.tta import TTAS
    from utils.data import fold_indices, load_train_arrays
    from utils.metric import score, threshold_sweep
    from utils.snapshots import val_masks_path
    from utils.submission import binarize
    from utils.thresholds import true_masks_for

    first = snaps[0]
    true = true_masks_for(val_masks_path(first), data_dir)
    probs = np.mean([np.load(val_masks_path(s), allow_pickle=False).astype(np.float32) for s in snaps], axis=0)
    ths = np.linspace(0, 1, 101)
    sweep = threshold_sweep(probs, true, ths)
    b = int(np.argmax(sweep))
    rt = setup_runtime('cpu')
    images, _ = load_train_arrays(Path(data_dir))
    tta, salt = 0.0, None
    for s in snaps:
        model, snap = model_from_snapshot(s, rt)
        val_aug, back = transforms_for(snap)
        _, va = fold_indices(Path(data_dir), snap['config']['folds_csv'], snap['config']['fold'])
        p, _ = predict_probs(model, images[va], val_aug, back, TTAS['null_hflip'], rt, 64, out_dtype=np.float32)
        tta = tta + p['mask'] / len(snaps)
        if 'salt' in getattr(model, 'output_keys', ()):
            with torch.no_grad():
                x = torch.from_numpy(images[va]).float()[:, None] / 255.0
                logits = torch.cat([model(float_input(val_aug(x[a:a + 64]), rt))['salt'] for a in range(0, len(x), 64)])
            salt = torch.sigmoid(logits).numpy()
    tta_sweep = threshold_sweep(tta, true, ths)
    tb = int(np.argmax(tta_sweep))
    sizes = {m: score(binarize(tta, ths[tb], m), true) for m in (0, 20, 40, 80, 160, 320)}
    m = max(sizes, key=sizes.get)
    out = dict(at05=float(sweep[50]), th=float(ths[b]), best=float(sweep[b]), tta_th=float(ths[tb]),
               tta=float(tta_sweep[tb]), min_size=m, post=sizes[m], salt=None)
    if salt is not None:
        pred = binarize(tta, ths[tb], m)
        cuts = {c: score(np.where(salt[:, None, None] < c, False, pred), true) for c in (0.1, 0.2, 0.3, 0.5)}
        c = max(cuts, key=cuts.get)
        out['salt'] = (c, cuts[c])
    return out


HEADER = ["| row | options | epochs | val score @0.5 | best th | score @best th | + hflip TTA | "
          "+ drop regions < N px | + empty where salt head < c |",
          "|---|---|---|---|---|---|---|---|---|"]


def main(argv=None):
    args = parse_args(argv)
    keys = args.rows.split(',')
    intro = [f"Fold 0 of a 5-fold coverage-stratified split of the real data, {args.minutes:g} min of training per row "
             f"on {args.threads} thread(s), {args.jobs} rows at a time, from scratch. Base command: "
             f"`python3 train.py {BASE} --max_minutes {args.minutes:g} --fold 0 --data_dir DATA --threads {args.threads}` "
             f"plus the row's options.", ""]
    t0 = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda k: run_row(k, args), keys))
    print(f"trained {len(keys)} rows in {(time.time() - t0) / 60:.1f} min", flush=True)
    lines = intro + HEADER
    results = {}
    for key, cmds, snaps, epochs in done:
        title, extra = ROWS[key]
        shown = extra if key != 'then_lovasz' else 'stage 2: --loss lovasz --optimizer adam_1e-4 --init STAGE1_BEST'
        if snaps is None or not snaps:
            lines.append(f"| {title} | `{shown}` | failed | | | | | | |")
            continue
        s = validation_scores(snaps, args.data_dir)
        results[key] = {**s, 'epochs': epochs, 'commands': cmds, 'snapshots': [str(p) for p in snaps]}
        salt = f"{s['salt'][1]:.4f} (c={s['salt'][0]})" if s['salt'] else "-"
        row = (f"| {title} | `{shown or '(base)'}` | {epochs} | {s['at05']:.4f} | {s['th']:.2f} | {s['best']:.4f} | "
               f"{s['tta']:.4f} (th {s['tta_th']:.2f}) | {s['post']:.4f} (N={s['min_size']}) | {salt} |")
        print(row, flush=True)
        lines.append(row)
    out = ROOT / args.out
    out.write_text('\n'.join(lines) + '\n')
    out.with_suffix('.json').write_text(json.dumps(results, indent=1, default=str))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
