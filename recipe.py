"""A whole recipe as one command: stack, fold, train every fold in two stages, threshold, submission.

    python3 recipe.py --data_dir data                            # the GPU recipe (recipes/gpu.toml): 5 folds
    python3 recipe.py --data_dir data --preset cpu --folds 0      # the CPU recipe: one fold, 20 + 10 minutes
    python3 recipe.py --data_dir data --recipe my.toml           # your own: a copy of recipes/cpu.toml, edited

A recipe file (recipes/*.toml; utils/recipes.py describes the format) holds each stage's train.py
options and minutes per fold. Steps (each skipped when its output is already there, so the same
command resumes):
1. utils/stack_and_save.py and utils/make_folds.py --n 5, unless DATA already holds them;
2. train_folds.py, stage 1 (the presets: unet_plain_ds with BCE on the mask, the per-scale heads and
   the salt head, adam 1e-3), a cosine over the stage's minutes per fold;
3. train_folds.py, stage 2 (the presets: symmetric Lovasz fine-tuning, adam 1e-4) from each fold's stage-1
   best snapshot, then the out-of-fold threshold and small-region size over all folds' validation
   images, each fold's best snapshot predicting the test images with hflip TTA, and their average
   thresholded into OUT.

With --pseudo, a third stage follows: tools/pseudo_labels.py adds the test images whose fold-averaged
prediction is confident to the training set (fold -1: trained on in every fold, never validated),
and each fold trains on for stage 3's minutes from its stage-2 best snapshot, then predicts again.
The out-of-fold score stays a score on true labels. OUT is then stage 3's submission and stage 2's
is kept as EXP_s2.submission.csv.

It prints the out-of-fold score (over every labeled image of the folds trained) and writes
EXP.recipe.json with the recipe, the minutes of each step and that score.
"""
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from net.runtime import cpu_has_native_bf16
from net.tta import TTAS
from utils.cli import Parser, check_ranges, check_with
from utils.errors import UserError, run_cli
from utils.data import data_dir_checked, test_ids, train_ids
from utils.io import check_output, check_prediction_pair, guard_data_dir, save_json
from utils.recipes import as_argv, load_recipe, preset_names, preset_path

ROOT = Path(__file__).resolve().parent

def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', default='data', help="the competition's data (train.csv, train/, test/, ...)")
    g = p.add_mutually_exclusive_group()
    g.add_argument('--preset', default=None, choices=preset_names(),
                   help="a recipe of recipes/ by name: recipes/PRESET.toml (default gpu)")
    g.add_argument('--recipe', default=None, metavar='FILE',
                   help="a recipe file (TOML, as recipes/*.toml): each stage's train.py options and minutes per fold")
    p.add_argument('--folds', default=None, help="folds to train (default: the recipe's, 0-4 in the presets)")
    p.add_argument('--experiment_dir', default=None,
                   help="runs go to EXP_s1_fold{k} and EXP_s2_fold{k} (default experiments/recipe_NAME, NAME the "
                        "recipe file's name)")
    p.add_argument('--stage1_minutes', type=float, default=None, help="per fold (default: the recipe's)")
    p.add_argument('--stage2_minutes', type=float, default=None, help="per fold (default: the recipe's)")
    p.add_argument('--stage3_minutes', type=float, default=None, help="per fold, with --pseudo (default: the recipe's)")
    p.add_argument('--pseudo', action='store_true',
                   help="a third stage on the labeled images plus the confident test masks (tools/pseudo_labels.py)")
    p.add_argument('--pseudo_dir', default=None, help="the pseudo-labeled data folder (default EXP_pseudo_data)")
    p.add_argument('--batch_size', type=int, default=None, help="default: the recipe's")
    p.add_argument('--arch', default=None, help="the architecture of every stage (default: the recipe's)")
    p.add_argument('--train_args', default='', help="more train.py options for both stages, one quoted string")
    p.add_argument('--stage1_args', default='', help="more train.py options for stage 1 (they win over the recipe's)")
    p.add_argument('--stage2_args', default='', help="more train.py options for stage 2 (and stage 3)")
    p.add_argument('--device', default='auto')
    p.add_argument('--amp', default='auto', choices=['auto', 'off', 'bf16', 'fp16'],
                   help="auto: bf16 on CUDA; on the CPU bf16 where it runs natively, else fp32")
    p.add_argument('--tta', default='null_hflip', choices=sorted(TTAS), help="test-time augmentation of the predictions")
    p.add_argument('--out', default=None, help="submission CSV (default EXP.submission.csv)")
    args = p.parse_args(argv)
    for name in ('train_args', 'stage1_args', 'stage2_args'):
        try:
            shlex.split(getattr(args, name))
        except ValueError as e:
            p.error(f"--{name}: {e}; quote the train.py options as one string")
    for name in ('stage1_minutes', 'stage2_minutes', 'stage3_minutes'):
        v = getattr(args, name)
        if v is not None and not v > 0:
            p.error(f"--{name} must be a positive number of minutes")
    check_ranges(p, args, {'stage1_minutes': (0, 10 ** 6), 'stage2_minutes': (0, 10 ** 6),
                           'stage3_minutes': (0, 10 ** 6), 'batch_size': (1, 1 << 16)})
    return args


def check_stage(step, cmd):
    """Parse a stage's command with the parsers of the scripts it runs (train_folds.py, and train.py for
    every fold), so that a bad option is one line before the first stage trains, not after it."""
    from net import stages
    if cmd[0] == '-m':  # a module of the project's (python3 -m tools.pseudo_labels ...)
        script, argv = str(cmd[1]).rsplit('.', 1)[-1] + '.py', [str(c) for c in cmd[2:]]
    else:
        script, argv = Path(str(cmd[0])).name, [str(c) for c in cmd[1:]]
    if script == 'train_folds.py':
        tf = check_with(stages.parse_args, argv, f"{step} (train_folds.py options)", 'train_folds.py')
        stages.precheck(tf, f"{step}: ")
    elif script == 'pseudo_labels.py':
        from tools.pseudo_labels import parse_args as pseudo_parse_args
        check_with(pseudo_parse_args, argv, f"{step} (tools/pseudo_labels.py options)", 'tools/pseudo_labels.py')


def run(step, cmd):
    print(f"\n== {step}: {' '.join(str(c) for c in cmd)}", flush=True)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT)
    if r.returncode != 0:
        raise UserError(f"{step} failed (exit {r.returncode}; its error is above); fix it and run the same command "
                        f"again: finished steps and folds are skipped")
    return (time.monotonic() - t0) / 60


def read_recipe(args):
    """The Recipe that --recipe or --preset names (default: the gpu preset), checked against train.py's options."""
    from net.training import build_parser
    path = Path(args.recipe) if args.recipe else preset_path(args.preset or 'gpu')
    return load_recipe(path, build_parser().actions())


def main(argv=None):
    args = parse_args(argv)
    recipe = read_recipe(args)
    print(f"recipe {recipe.name} ({recipe.path}): {recipe.description}", flush=True)
    m1 = args.stage1_minutes or recipe.minutes[0]
    m2 = args.stage2_minutes or recipe.minutes[1]
    m3 = args.stage3_minutes or recipe.minutes[2]
    folds = args.folds or recipe.folds
    overrides = {k: v for k, v in (('arch', args.arch), ('batch_size', args.batch_size)) if v is not None}
    data = Path(args.data_dir)
    exp = Path(args.experiment_dir or f'experiments/recipe_{recipe.name}')
    out = Path(args.out) if args.out else exp.with_name(exp.name + '.submission.csv')
    amp = args.amp
    if amp == 'auto':
        amp = 'auto' if args.device != 'cpu' and _cuda() else ('bf16' if cpu_has_native_bf16() else 'off')
    minutes = {}
    t0 = time.monotonic()

    def options(stage, data_dir, stage_minutes, extra):
        """train_folds.py's options for every fold of `stage`: the recipe file's stage (train.py --recipe, --stage),
        the overrides, the user's strings."""
        return ['--folds', folds, '--data_dir', data_dir, '--device', args.device, '--amp', amp,
                '--recipe', recipe.path.resolve(), '--stage', stage, *as_argv(overrides), '--max_minutes', stage_minutes,
                *shlex.split(args.train_args), *shlex.split(extra)]

    def fine_tune(stage, run_dir, data_dir, stage_minutes, init, submission):
        """Stage 2 (and 3): fine-tuning of every fold from `init`'s best, then the fold-averaged submission."""
        return ['train_folds.py', '--experiment_dir', run_dir,
                *options(stage, data_dir, stage_minutes, args.stage2_args), '--init', f'{init}_fold{{fold}}',
                '--predict', '--tta', args.tta, '--out', submission]

    s1, s2, s3 = f'{exp}_s1', f'{exp}_s2', f'{exp}_s3'
    out2 = Path(f'{s2}.submission.csv') if args.pseudo else out
    pseudo = Path(args.pseudo_dir or f'{exp}_pseudo_data')
    commands = {'stage 1': ['train_folds.py', '--experiment_dir', s1, *options('stage1', data, m1, args.stage1_args)],
                'stage 2 + predict': fine_tune('stage2', s2, data, m2, s1, out2)}
    if args.pseudo:
        from tools.pseudo_labels import check_out
        try:
            check_out(pseudo, data)
        except UserError as e:
            raise UserError(str(e).replace('--out', '--pseudo_dir', 1)) from None
        if not (pseudo / 'pseudo_labels.json').is_file():
            commands['pseudo-labels'] = [
                '-m', 'tools.pseudo_labels', '--data_dir', data, '--probs', out2.with_suffix('.npy'), '--th', 'auto',
                '--min_size', 'auto', '--oof', f'{s2}.oof.best.json', '--out', pseudo, '--overwrite']
        commands['stage 3 + predict'] = fine_tune('stage3', s3, pseudo, m3, s2, out)
    data_dir_checked(data)
    for step, cmd in commands.items():  # every stage's options, before the first one runs
        check_stage(step, cmd)
    # The data's ids and the recipe's own outputs, before the first step too (a stage's one-line error would
    # come only after the steps before it).
    for name, read in (('train.csv', train_ids), ('sample_submission.csv', test_ids)):
        if (data / name).is_file():
            read(data)
    guard_data_dir(data)
    check_prediction_pair(out)
    check_output(exp.with_name(exp.name + '.recipe.json'))
    if not (data / 'train_images.npy').is_file() or not (data / 'test_images.npy').is_file():
        minutes['stack'] = run('stack', ['utils/stack_and_save.py', '--data_dir', data])
    if not (data / 'train_with_folds.csv').is_file():
        minutes['folds'] = run('folds', ['utils/make_folds.py', '--p', data / 'train.csv', '--n', '5'])
    for step, cmd in commands.items():
        minutes[step] = run(step.replace(' + predict', ''), cmd)
    last = s3 if args.pseudo else s2
    total = (time.monotonic() - t0) / 60
    oof_path = Path(f'{last}.oof.best.json')
    oof = json.loads(oof_path.read_text()) if oof_path.is_file() else {}
    stages = [m1, m2, m3] if args.pseudo else [m1, m2]
    record = {'recipe': str(recipe.path), 'preset': recipe.name, 'folds': folds,
              'arch': overrides.get('arch', recipe.train.get('arch')), 'stage_minutes_per_fold': stages,
              'batch_size': overrides.get('batch_size', recipe.train.get('batch_size')),
              'minutes': minutes, 'total_minutes': total, 'submission': str(out),
              'out_of_fold_score': oof.get('score'), 'out_of_fold_score_with_min_size': oof.get('score_with_min_size'),
              'threshold': oof.get('threshold'), 'min_size': oof.get('min_size'), 'images': oof.get('images'),
              'command': ' '.join(['recipe.py'] + sys.argv[1:])}
    if args.pseudo:
        before = json.loads(Path(f'{s2}.oof.best.json').read_text())
        record['out_of_fold_score_before_pseudo'] = before.get('score_with_min_size') or before.get('score')
        record['pseudo_labels'] = {k: v for k, v in json.loads((pseudo / 'pseudo_labels.json').read_text()).items()
                                   if k != 'ids'}
    save_json(exp.with_name(exp.name + '.recipe.json'), record)
    score = oof.get('score_with_min_size') or oof.get('score')
    print(f"\nrecipe {recipe.name}: {total:.1f} min; out-of-fold score "
          f"{'-' if score is None else f'{score:.4f}'} over {oof.get('images')} images (threshold {oof.get('threshold')}, "
          f"min size {oof.get('min_size')}); submission {out}")
    return record


def _cuda():
    import torch
    return torch.cuda.is_available()


if __name__ == '__main__':
    run_cli(main)
