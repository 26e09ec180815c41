"""Ablation at GPU budgets: each row is the whole recipe (recipe.py) with one change, scored out of fold.

    python3 benchmarks/ablation_gpu.py --data_dir ../shared/tgs --folds 0 [--rows base,w32,...]
    python3 benchmarks/ablation_gpu.py --data_dir ../shared/tgs --folds 0-4 --rows base   # the full recipe

Every row runs `recipe.py --preset PRESET --folds FOLDS` plus its options in its own experiment
folder under --exp_root: stage 1, stage 2, the out-of-fold threshold, TTA prediction and the
fold average. The table (written to --out after every row, so a cut run keeps what it measured)
gives each row's recipe command, its minutes from start to submission, and its out-of-fold score
(over the validation images of the folds trained) at the searched threshold and region size.

DATA_DIR may be read-only (the competition's unzipped download): its files are linked into
--work, where the arrays and folds are made once for every row.
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# key: (what the row changes, recipe.py options)
ROWS = {
    'base': ("the GPU recipe: unet_plain_ds, batch 32, 1.2 + 0.5 min per fold", ''),
    'w32': ("width: unet_plain_ds_w32 (32..512 channels)", '--arch unet_plain_ds_w32'),
    'b128': ("batch 128, lr x2", '--batch_size 128 --stage1_args "--lr 2e-3" --stage2_args "--lr 2e-4"'),
    'long': ("budget: 3 + 1 min per fold", '--stage1_minutes 3 --stage2_minutes 1'),
    'w32_long': ("width 32 and 3 + 1 min per fold", '--arch unet_plain_ds_w32 --stage1_minutes 3 --stage2_minutes 1'),
    'resnet34': ("encoder: ds_resnet_34 (ResNet-34, deep supervision, salt head), reflect pad to 128",
                 '--arch ds_resnet_34 --train_args "--train_augs train_128_v3 --val_augs val_128 '
                 '--val_transforms crop_from_128"'),
    'swa': ("stage 2 ends in SWA over its last 30 %", '--stage2_args "--swa 0.3"'),
    'pseudo': ("pseudo-labels: a third stage with the confident test masks (0.5 min per fold)", '--pseudo'),
    'graphs': ("batch 128 with CUDA graphs (--compile reduce-overhead)",
               '--batch_size 128 --train_args "--compile reduce-overhead" --stage1_args "--lr 2e-3" '
               '--stage2_args "--lr 2e-4"'),
}
DEFAULT_ROWS = 'base,w32,b128,long,pseudo'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True, help="the competition's data (may be read-only)")
    p.add_argument('--preset', default='gpu', help="recipe.py --preset of every row (smoke: the test suite's)")
    p.add_argument('--folds', default='0', help="folds of every row (default 0: one fold per row)")
    p.add_argument('--rows', default=DEFAULT_ROWS, help=f"comma list of: {', '.join(ROWS)}")
    p.add_argument('--device', default='auto')
    p.add_argument('--work', default='/tmp/salt_ablation_gpu', help="linked data and its arrays")
    p.add_argument('--exp_root', default='experiments/ablation_gpu')
    p.add_argument('--out', default='benchmarks/ablation_gpu.md')
    p.add_argument('--extra', default='', help="recipe.py options added to every row (e.g. the smoke preset's)")
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(',') if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return args


def linked_data(src, work):
    """work/data with src's files linked in (never written to src); the recipe stacks and folds there."""
    src, data = Path(src).resolve(), Path(work) / 'data'
    if not (src / 'train.csv').is_file():
        sys.exit(f"error: {src} has no train.csv; pass --data_dir with the competition's data")
    data.mkdir(parents=True, exist_ok=True)
    for name in ('train.csv', 'sample_submission.csv', 'depths.csv', 'train', 'test'):
        link = data / name
        if (src / name).exists() and not link.exists():
            link.symlink_to(src / name)
    return data


def table(rows):
    lines = ['| row | what it changes | recipe options | minutes | out-of-fold score | threshold, min size | images |',
             '|---|---|---|---|---|---|---|']
    for key, what, options, rec in rows:
        if rec is None:
            lines.append(f"| {key} | {what} | `{options or '(base)'}` | - | failed | - | - |")
            continue
        score = rec.get('out_of_fold_score_with_min_size') or rec.get('out_of_fold_score')
        th = rec.get('threshold')
        lines.append(f"| {key} | {what} | `{options or '(base)'}` | {rec['total_minutes']:.1f} | "
                     f"{'-' if score is None else f'{score:.4f}'} | "
                     f"{'-' if th is None else f'{th:.2f}'}, {rec.get('min_size')} | {rec.get('images')} |")
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    data = linked_data(args.data_dir, args.work)
    out = Path(args.out)
    head = (f"Ablation at GPU budgets: `recipe.py --preset {args.preset} --folds {args.folds}` per row "
            f"(data {args.data_dir}, {time.strftime('%Y-%m-%d')}, device {args.device})\n\n")
    done = []
    for key in args.rows.split(','):
        what, options = ROWS[key]
        exp = Path(args.exp_root).resolve() / key
        cmd = [sys.executable, str(ROOT / 'recipe.py'), '--data_dir', str(data), '--preset', args.preset,
               '--folds', args.folds, '--experiment_dir', str(exp), '--device', args.device,
               *shlex.split(options), *shlex.split(args.extra)]
        print(f"\n=== {key}: {shlex.join(cmd[1:])}", flush=True)
        r = subprocess.run(cmd, cwd=ROOT)
        record_path = exp.with_name(exp.name + '.recipe.json')
        rec = json.loads(record_path.read_text()) if r.returncode == 0 and record_path.is_file() else None
        done.append((key, what, options, rec))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(head + table(done))
    print('\n' + table(done))
    return done


if __name__ == '__main__':
    main()
