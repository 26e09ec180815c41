"""Ablation at a fixed epoch count: each row is the recipe's two stages on fold 0, scored on its validation part.

    python3 benchmarks/ablation_epochs.py --data_dir DATA [--epochs 16,8] [--arch unet_plain_ds_w8]
        [--rows base,seed2,...] [--jobs 2] [--threads 1] [--out benchmarks/ablation_epochs.md]

DATA must be stacked and folded (utils/stack_and_save.py, utils/make_folds.py --n 5). A row trains
the two stages of --recipe (recipes/cpu.toml: BCE on every head, adam 1e-3, then symmetric Lovasz
fine-tuning, adam 1e-4), as a cosine over E1 and then E2 epochs (stage 2 from stage 1's best
snapshot), both with a fixed seed, then
scores stage 2's best snapshot (for the cycle rows: the mean of each cycle's best) on fold 0's
validation images: at the threshold searched on its saved validation masks, with hflip TTA at
the threshold searched on the TTA masks, and that TTA score by salt coverage of the true masks.

A fixed epoch count makes a row's score independent of the machine and of its load, so rows run
side by side (--jobs rows, --threads torch threads each); the minutes column is the row's wall
clock under that sharing, a cost figure only. The table (--out, markdown) and its JSON twin are
rewritten after every row; a row already in the JSON with the same commands (and recipe) is not
trained again, so the same command line resumes an interrupted ablation. Rows with the same stage 1
(those that change stage 2 only) share one run of it, which a stopped ablation also resumes
(train.py --resume) rather than starts again.
"""
import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Lock

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

# Both stages of a recipe file (recipes/cpu.toml unless --recipe says; train.py --recipe FILE --stage NAME), at a
# fixed epoch count instead of minutes: the architecture is --arch, and the time schedule becomes a cosine by epoch.
BY_EPOCH = '--pretrained none --scheduler cosine --schedule_by epoch --max_minutes 0 --amp off --fold 0 --overwrite'


def recipe_stages(path):
    """(the recipe as the commands name it, {stage: its options}) of the recipe file `path`, checked."""
    from net.training import build_parser
    from utils.recipes import load_recipe
    r = load_recipe(path, build_parser().actions())
    path = Path(path).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return str(shown), {stage: r.options(stage) for stage in ('stage1', 'stage2')}


# key: (what the row changes, stage-1 options, stage-2 options, scoring options). Options of a row
# come after the recipe's, so they win. {arch} is the ablation's architecture, {w} its width suffix
# ('' for the width-16 nets, '_w8' for the screening width).
# scoring: 'cycles' scores the mean of each cycle's best snapshot; 'empty_below' also empties the
# masks whose salt head says no salt, at the cut that scores best.
ROWS = {
    'base': ("the recipe (--recipe, recipes/cpu.toml by default) at --arch", '', '', {}),
    'seed2': ("the recipe, another seed (the noise)", '--seed 7', '--seed 7', {}),
    'seed3': ("the recipe, a third seed (the noise)", '--seed 11', '--seed 11', {}),
    'sym': ("stage 2: symmetric Lovasz on the mask (the recipe's since 2026-12-02)", '', '--loss combined_sym', {}),
    'lovasz': ("stage 2: plain Lovasz on the mask (the recipe's before 2026-12-02)", '', '--loss combined', {}),
    'sym_seed2': ("symmetric Lovasz, another seed", '--seed 7', '--seed 7 --loss combined_sym', {}),
    'salt_only': ("mask losses on salt images only; salt head empties at predict",
                  '--loss combined_bce_salt', '--loss combined_salt', {'empty_below': True}),
    'sym_salt': ("symmetric Lovasz, salt images only; salt head empties at predict",
                 '--loss combined_bce_salt', '--loss combined_sym_salt', {'empty_below': True}),
    'center': ("loss on the un-padded 101x101 centre only", '--loss_region center', '--loss_region center', {}),
    'dil': ("three stride-2 stages, dilated deepest level", '--arch unet_plain_ds_dil{w}',
            '--arch unet_plain_ds_dil{w}', {}),
    'scse': ("scSE gates in the decoder", '--arch unet_plain_ds_scse{w}', '--arch unet_plain_ds_scse{w}', {}),
    'hyper': ("hypercolumn head", '--arch unet_plain_ds_hyper{w}', '--arch unet_plain_ds_hyper{w} --loss combined_hyper',
              {}),
    'resize256': ("resize 101 -> 202, reflect pad to 256", '--train_augs train_256_v1', '--train_augs train_256_v1', {}),
    'small_crops': ("synthetic small-mask crops (0.25 x the images, half weight)", '--small_crops 0.25',
                    '--small_crops 0.25', {}),
    'sym_crops': ("symmetric Lovasz and the small-mask crops together", '--small_crops 0.25',
                  '--small_crops 0.25 --loss combined_sym', {}),
    'sym_crops_seed2': ("symmetric Lovasz and the small-mask crops, another seed", '--seed 7 --small_crops 0.25',
                        '--seed 7 --small_crops 0.25 --loss combined_sym', {}),
    'cycles': ("stage 2 as 3 cosine cycles, mean of each cycle's best", '', '--cycles 3', {'cycles': True}),
    'lr3': ("stage 2 at 3e-4 (the recipe's since 2026-12-03)", '', '--lr 3e-4', {}),
    'lr3_seed2': ("stage 2 at 3e-4, another seed", '--seed 7', '--seed 7 --lr 3e-4', {}),
    'lr1': ("stage 2 at 1e-4 (the recipe's before 2026-12-03)", '', '--lr 1e-4', {}),
    's1_sym': ("stage 1: symmetric Lovasz added 1:1 to the BCE",
               '--loss combined_bce_sym', '', {}),
    'bs8': ("batch 8 instead of 16: twice the steps per epoch", '--batch_size 8', '--batch_size 8', {}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', required=True)
    p.add_argument('--epochs', default='16,8', help="epochs of stage 1 and stage 2 (default 16,8)")
    p.add_argument('--arch', default='unet_plain_ds_w8',
                   help="the recipe's architecture for every row (default unet_plain_ds_w8, the screening width; "
                        "unet_plain_ds is the recipe's)")
    p.add_argument('--recipe', default=str(ROOT / 'recipes' / 'cpu.toml'),
                   help="the recipe file whose two stages every row runs (default recipes/cpu.toml)")
    p.add_argument('--rows', default=','.join(ROWS), help=f"comma list of: {', '.join(ROWS)}")
    p.add_argument('--jobs', type=int, default=2, help="rows trained at the same time")
    p.add_argument('--threads', type=int, default=1, help="torch threads of each row")
    p.add_argument('--exp_root', default='experiments/ablation_epochs')
    p.add_argument('--out', default='benchmarks/ablation_epochs.md')
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(',') if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; pick from {', '.join(ROWS)}")
    try:
        e1, e2 = (int(x) for x in args.epochs.split(','))
    except ValueError:
        p.error("--epochs takes two whole numbers, stage 1 and stage 2, e.g. 16,8")
    if e1 < 1 or e2 < 1 or args.jobs < 1 or args.threads < 1:
        p.error("--epochs, --jobs and --threads must be positive")
    args.e1, args.e2 = e1, e2
    from utils.errors import UserError
    try:
        args.recipe_shown, args.recipe_options = recipe_stages(args.recipe)
    except UserError as e:
        p.error(str(e))
    return args


def width_suffix(arch):
    return '_w8' if arch.endswith('_w8') else ''


def row_commands(key, args, exp):
    """The two train.py command lines of a row (strings, without --threads). Rows whose stage 1 is the same
    (sym, lovasz and cycles change stage 2 only) share one run of it (stage1_dir)."""
    _, o1, o2, _ = ROWS[key]
    w = width_suffix(args.arch)
    o1, o2 = o1.format(w=w), o2.format(w=w)
    data = f"--data_dir {args.data_dir}"
    s1 = stage1_dir(exp.parent, o1)
    c1 = (f"{stage_command(args, 1)} --n_epochs {args.e1} {data} --experiment_dir {s1} {o1}")
    c2 = (f"{stage_command(args, 2)} --n_epochs {args.e2} {data} --init {s1} --experiment_dir {exp / 'stage2'} {o2}")
    return c1, c2


def stage1_dir(root, options):
    """The stage-1 run of the rows under `root` whose stage-1 options are `options`: ROOT/stage1 for the recipe's
    own, else ROOT/stage1_<digest of the options>."""
    if not options.strip():
        return root / 'stage1'
    return root / f"stage1_{hashlib.sha1(' '.join(options.split()).encode()).hexdigest()[:10]}"


def stage_command(args, i):
    return f"--recipe {shlex.quote(args.recipe_shown)} --stage stage{i} --arch {args.arch} {BY_EPOCH}"


def train(cmd, threads, log):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    with open(log, 'w') as f:
        r = subprocess.run([sys.executable, 'train.py', *shlex.split(cmd), '--threads', str(threads)], cwd=ROOT,
                           text=True, env=env, stdout=f, stderr=subprocess.STDOUT)
    return r.returncode


def scored_snapshots(stage2, cycles):
    from utils.snapshots import best_of, snapshots_in
    if not cycles:
        return [best_of(snapshots_in(stage2 / 'snapshots')).path]
    return [best_of(snapshots_in(d)).path for d in sorted((stage2 / 'snapshots').glob('cycle_*')) if d.is_dir()]


def validation_scores(snaps, data_dir, empty_below=False, threads=1):
    """The table's score columns for the mean of `snaps` on fold 0's validation images."""
    import numpy as np
    import torch

    from net.inference import model_from_snapshot, predict_probs, transforms_for
    from net.runtime import setup_runtime
    from net.tta import TTAS
    from utils.data import fold_indices, load_train_arrays
    from utils.metric import coverage_breakdown, image_scores, threshold_sweep
    from utils.snapshots import val_masks_path
    from utils.submission import binarize
    from utils.thresholds import true_masks_for

    torch.set_num_threads(threads)
    true = true_masks_for(val_masks_path(snaps[0]), data_dir)
    ths = np.linspace(0, 1, 101)
    plain = np.mean([np.load(val_masks_path(s), allow_pickle=False).astype(np.float32) for s in snaps], axis=0)
    sweep = threshold_sweep(plain, true, ths)
    b = int(np.argmax(sweep))
    rt = setup_runtime('cpu')
    images, _ = load_train_arrays(Path(data_dir))
    tta, salt = 0.0, 0.0
    for s in snaps:
        model, snap = model_from_snapshot(s, rt)
        val_aug, back = transforms_for(snap)
        _, va = fold_indices(Path(data_dir), snap['config']['folds_csv'], snap['config']['fold'])
        keys = ('mask', 'salt') if 'salt' in getattr(model, 'output_keys', ()) else ('mask',)
        p, _ = predict_probs(model, images[va], val_aug, back, TTAS['null_hflip'], rt, 64, keys=keys,
                             out_dtype=np.float32)
        tta = tta + p['mask'] / len(snaps)
        if 'salt' in p:
            salt = salt + np.asarray(p['salt'], np.float32).reshape(-1) / len(snaps)
    tta_sweep = threshold_sweep(tta, true, ths)
    tb = int(np.argmax(tta_sweep))
    pred = binarize(tta, ths[tb], 0)
    out = {'th': float(ths[b]), 'score': float(sweep[b]), 'tta_th': float(ths[tb]), 'tta': float(tta_sweep[tb])}
    if np.ndim(salt):
        # the salt head empties the masks of the images it calls empty, at the cut that scores best
        cuts = {c: image_scores(np.where(salt[:, None, None] < c, False, pred), true).mean()
                for c in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)}
        c = max(cuts, key=cuts.get)
        out['empty_below'] = c
        out['tta_empty'] = float(cuts[c])
        if empty_below:
            pred = np.where(salt[:, None, None] < c, False, pred)
    out['coverage'] = {r['name']: r['score'] for r in coverage_breakdown(image_scores(pred, true), true)}
    return out


def epochs_of(run_dir):
    import pandas as pd
    return len(pd.read_csv(run_dir / 'logs' / 'log.csv'))


HEADER = ["| row | what it changes | epochs | minutes | fold-0 score (th) | + hflip TTA (th) | + salt head empties (cut) | "
          "empty | < 10 % | 10-50 % | > 50 % | stage options | CPU, date |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def cpu_label():
    """The CPU a row ran on: its model name and what it offers (AMX, AVX-512 BF16, AVX-512 or AVX2): rows of one
    table may come from several machines, whose float rounding differs, so a row's seed noise is per machine."""
    from benchmarks.common import machine_info
    from tools.demo import cpu_class
    return f"{machine_info()['cpu']}, {cpu_class()}"


def table_row(key, r):
    title = ROWS[key][0]
    if 'error' in r:
        return f"| {key} | {title} | - | - | failed: {r['error']} | | | | | | | | |"
    s = r['scores']
    tta = f"{s['tta']:.4f} ({s['tta_th']:.2f})"
    emptied = f"{s['tta_empty']:.4f} ({s['empty_below']})" if 'tta_empty' in s else '-'
    cov = ' | '.join('-' if s['coverage'].get(k) is None else f"{s['coverage'][k]:.3f}"
                     for k in ('empty', '<10 %', '10-50 %', '>50 %'))
    o1, o2 = (o.strip() for o in r['options'])
    opts = f"1: `{o1 or '-'}`; 2: `{o2 or '-'}`"
    return (f"| {key} | {title} | {r['epochs'][0]} + {r['epochs'][1]} | {r['minutes']:.0f} | "
            f"{s['score']:.4f} ({s['th']:.2f}) | {tta} | {emptied} | {cov} | {opts} | "
            f"{r.get('cpu', '-')}, {r.get('date', '-')} |")


def write_table(args, results, path):
    from benchmarks.common import machine_info
    from utils.recipes import as_argv
    cpu = machine_info()['cpu']
    intro = [f"# Ablation at {args.e1} + {args.e2} epochs, `{args.arch}`",
             "",
             f"Fold 0 of the real data's 5-fold coverage-stratified split (640 validation images), from scratch, "
             f"seed 42 unless the row says, rows side by side on one thread each (this run: {args.jobs} at a time on "
             f"{args.threads}, {cpu}; each row's CPU and date in its last column: float rounding differs between CPUs, "
             f"so compare rows of one CPU). Every row runs the recipe's two stages with the options shown added:",
             "",
             f"- stage 1: `python3 train.py {stage_command(args, 1)} --n_epochs {args.e1} "
             f"--data_dir DATA --experiment_dir EXP/stage1`",
             f"- stage 2: `python3 train.py {stage_command(args, 2)} --n_epochs {args.e2} "
             f"--data_dir DATA --init EXP/stage1 --experiment_dir EXP/stage2`",
             "",
             f"The recipe's stages, as `train.py --recipe` reads them (its minutes replaced by the epochs): "
             + '; '.join(f"{stage}: `{' '.join(as_argv(o))}`" for stage, o in args.recipe_options.items()) + ".",
             "",
             "Scores: stage 2's best snapshot at the threshold searched on its validation masks, then with hflip "
             "TTA at the threshold searched on the TTA masks; the coverage columns break that TTA score down by "
             "the true masks' salt coverage (after the salt head's emptying where the row says so). Where the model "
             "has a salt head, a column gives the TTA score once the masks of the images the head calls empty "
             "(probability below the cut, the best of 0.1-0.6) are emptied: predict*.py --empty_below. Minutes are "
             "wall clock shared with the other rows: a cost figure, not a speed measurement.",
             ""]
    lines = intro + HEADER + [table_row(k, results[k]) for k in ROWS if k in results]
    path.write_text('\n'.join(lines) + '\n')
    path.with_suffix('.json').write_text(json.dumps({'arch': args.arch, 'epochs': [args.e1, args.e2],
                                                     'rows': results}, indent=1, default=str))


def load_results(path, args):
    j = path.with_suffix('.json')
    if not j.is_file():
        return {}
    old = json.loads(j.read_text())
    if old.get('arch') != args.arch or old.get('epochs') != [args.e1, args.e2]:
        return {}
    return {k: v for k, v in old.get('rows', {}).items() if 'error' not in v}


def run_row(key, args, results, lock, out):
    exp = ROOT / args.exp_root / f"{args.arch}_{args.e1}_{args.e2}" / key
    exp.mkdir(parents=True, exist_ok=True)
    c1, c2 = row_commands(key, args, exp)
    w = width_suffix(args.arch)
    options = [ROWS[key][1].format(w=w), ROWS[key][2].format(w=w)]
    prev = results.get(key)
    # the commands name the recipe file, so its stages' options are compared too (an edited recipe trains again)
    if prev and prev.get('commands') == [c1, c2] and prev.get('recipe') == args.recipe_options:
        return
    t0 = time.time()
    r = {'commands': [c1, c2], 'options': options, 'recipe': args.recipe_options}
    s1 = stage1_dir(exp.parent, options[0])
    error = run_stage1(key, c1, s1, args)
    if error is None:
        print(f"[{key}] stage 2: python3 train.py {c2}", flush=True)
        if train(c2, args.threads, exp / 'stage2.log'):
            error = f"stage 2 exited non-zero, see {exp / 'stage2.log'}"
    if error is not None:
        r['error'] = error
    else:
        scoring = ROWS[key][3]
        snaps = scored_snapshots(exp / 'stage2', scoring.get('cycles'))
        r['scores'] = validation_scores(snaps, args.data_dir, scoring.get('empty_below'), args.threads)
        r['snapshots'] = [str(s) for s in snaps]
        r['epochs'] = [epochs_of(s1), epochs_of(exp / 'stage2')]
    r['minutes'] = (time.time() - t0) / 60
    r['cpu'], r['date'] = cpu_label(), time.strftime('%Y-%m-%d')
    with lock:
        results[key] = r
        write_table(args, results, out)
        print(table_row(key, r), flush=True)


_STAGE1_LOCKS = {}
_LOCKS_LOCK = Lock()


def run_stage1(key, c1, s1, args):
    """Train the shared stage 1 `s1` unless it has finished with the same command and recipe (its .json marker
    says so); a run of that command stopped midway goes on with --resume. None, or the error of the row."""
    from utils.io import save_json
    with _LOCKS_LOCK:
        lock = _STAGE1_LOCKS.setdefault(s1, Lock())
    marker = s1.parent / f"{s1.name}.json"
    same = {'command': c1, 'recipe': args.recipe_options['stage1']}
    with lock:
        old = json.loads(marker.read_text()) if marker.is_file() else {}
        mine = {k: old.get(k) for k in same} == same
        if mine and old.get('finished') and (s1 / 'summary.json').is_file():
            print(f"[{key}] stage 1: {s1} (finished, shared)", flush=True)
            return None
        cmd = c1
        if mine and (s1 / 'checkpoint.pth').is_file():
            cmd = c1.replace(' --overwrite', ' --resume')
        save_json(marker, {**same, 'finished': False})
        print(f"[{key}] stage 1: python3 train.py {cmd}", flush=True)
        log = s1.parent / f"{s1.name}.log"
        if train(cmd, args.threads, log):
            return f"stage 1 exited non-zero, see {log}"
        save_json(marker, {**same, 'finished': True})
    return None


def main(argv=None):
    args = parse_args(argv)
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    results = load_results(out, args)
    lock = Lock()
    keys = args.rows.split(',')
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(run_row, k, args, results, lock, out) for k in keys]:
            f.result()
    write_table(args, results, out)
    print(out.read_text())
    return results


if __name__ == '__main__':
    main()
