"""The bad-input matrix (issue 19): every entry point against every class of bad input.

Each row is (class, script, case, setup): setup edits a private copy of a small stacked data folder
and a tiny trained run (tests/bad_input_env.py) and returns the command line and the phrases its
error must hold. Every case runs as a real process (cwd: its own folder, so a stray default output
lands where it is seen) and must end with a non-zero exit, one `prog: error: ...` line on stderr, no
traceback, and every file under its folder (data, experiment, outputs) byte-identical afterwards.

A new script or option joins by adding a row; a class that cannot apply to a script says why in
NOT_APPLICABLE, and test_every_entry_point_meets_every_class keeps the two complete.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest

from bad_input_env import (LITE, N_TEST, assert_refused, build, copy_env, duplicate_row, make_cycles, nan_weights,
                           rewrite_snapshot, run_scripts, write_probs)
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.real_data]  # about two minutes: a hundred processes, a few of them predicting

ENTRY_POINTS = ['utils/stack_and_save.py', 'utils/make_folds.py', 'train.py', 'train_border.py', 'optimize_threshold.py',
                'predict.py', 'predict_tta.py', 'predict_se.py', 'predict_fold_avg.py', 'train_folds.py', 'recipe.py',
                'tools/evaluate.py', 'tools/pseudo_labels.py']
CLASSES = {1: 'an output replaces an input', 2: 'ids', 3: 'a write that fails', 4: 'values out of range',
           5: 'hand-edited or foreign files', 6: 'options on --resume', 7: 'a broken model',
           8: 'the message names the real problem'}

# (script, class): why the class cannot happen there.
NOT_APPLICABLE = {
    ('utils/stack_and_save.py', 1): "its only outputs are the stacked arrays it makes",
    ('utils/stack_and_save.py', 5): "it reads no JSON or snapshot",
    ('utils/stack_and_save.py', 6): "no --resume",
    ('utils/stack_and_save.py', 7): "no model",
    ('utils/make_folds.py', 5): "it reads no JSON or snapshot",
    ('utils/make_folds.py', 6): "no --resume",
    ('utils/make_folds.py', 7): "no model",
    ('train.py', 7): "it writes no probabilities of a given snapshot",
    ('train_border.py', 7): "it writes no probabilities of a given snapshot",
    ('optimize_threshold.py', 6): "no --resume",
    ('predict.py', 6): "no --resume",
    ('predict_tta.py', 6): "no --resume",
    ('predict_se.py', 6): "no --resume",
    ('predict_fold_avg.py', 6): "no --resume",
    ('train_folds.py', 7): "its folds predict through predict_tta.py (rows there)",
    ('recipe.py', 7): "its folds predict through predict_tta.py (rows there)",
    ('tools/evaluate.py', 1): "it writes nothing",
    ('tools/evaluate.py', 3): "it writes nothing",
    ('tools/evaluate.py', 4): "it has no numeric option",
    ('tools/evaluate.py', 5): "it reads no JSON or snapshot",
    ('tools/evaluate.py', 6): "no --resume",
    ('tools/evaluate.py', 7): "it scores CSVs, no model",
    ('tools/pseudo_labels.py', 6): "no --resume",
}


# ---------------------------------------------------------------- helpers for the rows

def pred(c, *more, script_args=None):
    """A predict command's common options (its --out in the case's out folder unless `more` gives one)."""
    base = script_args if script_args is not None else ['--snapshot', c['snap']]
    argv = [*base, '--data_dir', c['data'], '--threads', '1', *more]
    return argv if '--out' in more else [*argv, '--out', c['out'] / 'sub.csv']


def se(c, *more):
    make_cycles(c)
    return pred(c, *more, script_args=['--snapshot_dir', c['exp'] / 'snapshots'])


def fold_avg(c, *more):
    probs = write_probs(c['out'] / 'p.npy', N_TEST)
    argv = [probs, '--data_dir', c['data'], *more]
    return argv if '--out' in more else [*argv, '--out', c['out'] / 'avg.csv']


def pseudo(c, *more, probs=None):
    probs = probs or write_probs(c['out'] / 'p.npy', N_TEST, 0.99)
    argv = ['--data_dir', c['data'], '--probs', probs, *more]
    return argv if '--out' in more else [*argv, '--out', c['out'] / 'pseudo']


def train(c, *more, border=False):
    return [*LITE, *(['--loss', 'boundary_bce', '--arch', 'wide_resnet_border'] if border else []),
            '--data_dir', c['data'], '--experiment_dir', c['root'] / 'new', *more]


def resume(c, *more):
    return ['--experiment_dir', c['exp'], '--resume', '--threads', '1', *more]


def tf(c, *more, exp=None):
    return ['--folds', '0', '--experiment_dir', exp or c['root'] / 'tf', *LITE, '--data_dir', c['data'], *more]


def recipe(c, *more):
    preset = [] if '--recipe' in more else ['--preset', 'smoke']
    return [*preset, '--folds', '0', '--data_dir', c['data'], '--experiment_dir', c['root'] / 'r',
            '--device', 'cpu', *more]


def a_file(c, name='plain'):
    p = c['root'] / name
    p.write_text('a plain file\n')
    return p


def a_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def edit_row(csv, row, text):
    lines = csv.read_text().splitlines()
    lines[row] = text(lines[row])
    csv.write_text('\n'.join(lines) + '\n')


def set_id(csv, row, new_id):
    edit_row(csv, row, lambda line: new_id + ',' + line.split(',', 1)[1])


def bad_rle(c, rle='1 2.5'):
    edit_row(c['data'] / 'train.csv', 1, lambda line: line.split(',')[0] + ',' + rle)
    return c['data'] / 'train.csv'


def bad_depth(c):
    edit_row(c['data'] / 'depths.csv', 1, lambda line: line.split(',')[0] + ',deep')


def config_edit(c, change, path=None):
    path = path or c['exp'] / 'train_config.json'
    config = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(change(config)))


def snapshot_edit(c, change, name='epoch_9.loss_0.0100.iout_0.990'):
    dst = c['snap'].parent / name
    rewrite_snapshot(c['snap'], dst, change)
    return dst


def cycle_snapshot_edit(c, change):
    snaps = make_cycles(c)
    target = snaps / 'cycle_1' / c['snap'].name
    rewrite_snapshot(target, target, change)
    return snaps


def bad_checkpoint_config(c, key='loss'):
    import torch
    path = c['exp'] / 'checkpoint.pth'
    state = torch.load(path, map_location='cpu', weights_only=True)
    state['config'].pop(key)
    torch.save(state, path)


def unfinished(c, exp=None):
    """The copied run, as if stopped after its checkpoint (train_folds.py and recipe.py then resume it)."""
    exp = exp or c['exp']
    (exp / 'summary.json').unlink()
    return exp


def nan_probs(c):
    p = write_probs(c['out'] / 'nan.npy', N_TEST, dtype=np.float32)
    a = np.load(p)
    a[2, 5, 5] = np.nan
    np.save(p, a)
    return p


def submission_with(c, rows):
    p = c['out'] / 'sub_in.csv'
    p.write_text('id,rle_mask\n' + ''.join(f'{i},{r}\n' for i, r in rows))
    return p


def truth_ids(c):
    return [line.split(',')[0] for line in (c['data'] / 'train.csv').read_text().splitlines()[1:]]


def both_dup(c):
    duplicate_row(c['data'] / 'train.csv', 2)
    return c['data']


def sub_dup(c):
    duplicate_row(c['data'] / 'sample_submission.csv', 2)
    return c['data']


def long_name(c):
    return c['out'] / ('n' * 250 + '.csv')


DATA_FILE_MSG = 'must not replace'
DUP = ['twice']


# ---------------------------------------------------------------- the matrix: (class, script, case, setup)

def rows():
    S, M, T, TB = 'utils/stack_and_save.py', 'utils/make_folds.py', 'train.py', 'train_border.py'
    O, P, PT, PS, PF = 'optimize_threshold.py', 'predict.py', 'predict_tta.py', 'predict_se.py', 'predict_fold_avg.py'
    TF, R, E, PL = 'train_folds.py', 'recipe.py', 'tools/evaluate.py', 'tools/pseudo_labels.py'
    return [
        # 1. an output replaces an input
        (1, M, '--out over train.csv', lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--out', c['data'] / 'train.csv'], [DATA_FILE_MSG, 'train.csv'])),
        (1, M, "--out over a run's log", lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--out', c['exp'] / 'logs' / 'log.csv'], ['a file of the run', 'only train.py'])),
        (1, M, '--out over sample_submission.csv', lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--out', c['data'] / 'sample_submission.csv'], [DATA_FILE_MSG])),
        (1, O, '--out over train_config.json', lambda c: (['--masks_fn', c['masks'], '--out', c['exp'] / 'train_config.json'], ['inside the run folder', 'train_config.json'])),
        (1, O, "--out over the run's summary.json", lambda c: (['--masks_fn', c['masks'], '--out', c['exp'] / 'summary.json'], ['inside the run folder', '.best.json'])),
        (1, T, '--experiment_dir the data folder', lambda c: (train(c, '--experiment_dir', c['data'], '--overwrite'), ['inside the data folder'])),
        (1, T, '--experiment_dir inside a run', lambda c: (train(c, '--experiment_dir', c['exp'] / 'predictions', '--overwrite'), ['inside the run folder'])),
        (1, TB, '--experiment_dir holding logs/ of no run', lambda c: (a_dir(c['out'] / 'proj' / 'logs'), train(c, '--experiment_dir', c['out'] / 'proj', '--overwrite', border=True))[1:] + (['no run of train.py'],)),
        (1, TF, 'fold folders inside the data folder', lambda c: (tf(c, exp=c['data'] / 'runs'), ['inside the data folder'])),
        (1, PL, '--out inside a run folder', lambda c: (pseudo(c, '--out', c['exp'] / 'pseudo', '--overwrite'), ['inside the run folder'])),
        (1, R, '--pseudo --pseudo_dir inside the data folder', lambda c: (recipe(c, '--pseudo', '--pseudo_dir', c['data'] / 'pseudo'), ['--pseudo_dir', 'inside the data folder'])),
        (1, PL, '--out inside the data folder', lambda c: (pseudo(c, '--out', c['data'] / 'train', '--overwrite'), ['inside the data folder'])),
        (1, P, '--out beside the stacked test set', lambda c: (pred(c, '--out', c['data'] / 'test_images.csv'), [DATA_FILE_MSG, 'test_images.npy'])),
        (1, P, '--out over train.csv', lambda c: (pred(c, '--out', c['data'] / 'train.csv'), [DATA_FILE_MSG, 'train.csv'])),
        (1, P, '--out over train_with_folds.csv', lambda c: (pred(c, '--out', c['data'] / 'train_with_folds.csv'), [DATA_FILE_MSG, 'make_folds.py'])),
        (1, PT, "--out beside a run's validation masks", lambda c: (pred(c, '--out', c['masks'].with_suffix('.csv')), ['a file of the run', c['masks'].name])),
        (1, P, '--out beside an array that is no prediction', lambda c: (shutil.copy(c['masks'], c['out'] / 'vm.npy'), pred(c, '--out', c['out'] / 'vm.csv'))[1:] + (['exists without it', 'vm.npy'],)),
        (1, P, "--out over a run's log", lambda c: (pred(c, '--out', c['exp'] / 'logs' / 'log.csv'), ['a file of the run', 'log.csv'])),
        (1, PS, "--out over a run's threshold curve", lambda c: (se(c, '--out', c['masks'].with_suffix('.thresholds.csv')), ['refusing to write', 'run'])),
        (1, PF, "--save_probs over a run's validation masks", lambda c: (fold_avg(c, '--out', c['masks'].with_suffix('.csv'), '--save_probs'), ['a file of the run'])),
        (1, PT, '--out beside the stacked train masks', lambda c: (pred(c, '--out', c['data'] / 'train_masks.csv'), [DATA_FILE_MSG, 'train_masks.npy'])),
        (1, PS, '--out over sample_submission.csv', lambda c: (se(c, '--out', c['data'] / 'sample_submission.csv'), [DATA_FILE_MSG])),
        (1, PF, '--save_probs over its own input', lambda c: (fold_avg(c, '--out', c['out'] / 'p.csv', '--save_probs'), [DATA_FILE_MSG, 'p.npy'])),
        (1, PF, '--out beside the stacked test set', lambda c: (fold_avg(c, '--out', c['data'] / 'test_images.csv', '--save_probs'), [DATA_FILE_MSG])),
        (1, TF, '--predict --out beside the stacked test set', lambda c: (tf(c, '--predict', '--out', c['data'] / 'test_images.csv'), [DATA_FILE_MSG, 'test_images.npy'])),
        (1, R, '--out beside the stacked test set', lambda c: (recipe(c, '--out', c['data'] / 'test_images.csv'), [DATA_FILE_MSG, 'test_images.npy'])),
        (1, PL, '--out the data folder', lambda c: (pseudo(c, '--out', c['data'], '--overwrite'), ['data folder'])),
        (1, PL, '--probs inside --out', lambda c: (pseudo(c, '--out', c['out'], '--overwrite', probs=write_probs(c['out'] / 'train_images.npy', N_TEST, 0.99)), [DATA_FILE_MSG, 'train_images.npy'])),
        # 2. ids
        (2, S, 'duplicated train row', lambda c: (['--data_dir', both_dup(c), '--workers', '1'], DUP)),
        (2, S, "id with '..'", lambda c: (set_id(c['data'] / 'sample_submission.csv', 2, '../x'), ['--data_dir', c['data'], '--workers', '1'])[1:] + (["'../x'"],)),
        (2, S, 'empty id', lambda c: (set_id(c['data'] / 'train.csv', 3, ''), ['--data_dir', c['data'], '--workers', '1'])[1:] + (['empty id'],)),
        (2, M, 'duplicated train row', lambda c: (['--p', both_dup(c) / 'train.csv', '--n', '3'], DUP)),
        (2, M, 'id with a slash', lambda c: (set_id(c['data'] / 'train.csv', 4, 'a/b'), ['--p', c['data'] / 'train.csv', '--n', '3'])[1:] + (['path separator'],)),
        (2, T, 'duplicated train row', lambda c: (train(c, '--data_dir', both_dup(c)), DUP)),
        (2, TB, 'duplicated train row', lambda c: (train(c, '--data_dir', both_dup(c), border=True), DUP)),
        (2, O, 'duplicated train row', lambda c: (['--masks_fn', c['masks'], '--data_dir', both_dup(c)], DUP)),
        (2, P, 'duplicated sample_submission row', lambda c: (pred(c, '--data_dir', sub_dup(c)), DUP)),
        (2, P, 'a PNG that gives no id', lambda c: (pngs_with(c, '.png'), pred(c, '--images', c['out'] / 'pngs', script_args=['--snapshot', c['snap']]))[1:] + (['no name'],)),
        (2, PT, 'two PNGs that give one id', lambda c: (pngs_with(c, 'a.PNG'), pred(c, '--images', c['out'] / 'pngs'))[1:] + (['same id'],)),
        (2, PS, 'duplicated sample_submission row', lambda c: (se(c, '--data_dir', sub_dup(c)), DUP)),
        (2, PF, 'duplicated sample_submission row', lambda c: (fold_avg(c, '--data_dir', sub_dup(c)), DUP)),
        (2, TF, 'duplicated train row', lambda c: (tf(c, '--data_dir', both_dup(c)), DUP)),
        (2, R, 'duplicated train row', lambda c: (recipe(c, '--data_dir', both_dup(c)), DUP)),
        (2, E, 'duplicated submission id', lambda c: (['--submission', submission_with(c, [(truth_ids(c)[0], ''), (truth_ids(c)[0], '')]), '--truth', c['data'] / 'train.csv'], DUP)),
        (2, E, "truth id with '..'", lambda c: (set_id(c['data'] / 'train.csv', 2, '..'), ['--submission', submission_with(c, [(truth_ids(c)[0], '')]), '--truth', c['data'] / 'train.csv'])[1:] + (["'..'"],)),
        (2, PL, 'duplicated train row', lambda c: (pseudo(c, '--data_dir', both_dup(c)), DUP)),
        # 3. a write that fails
        (3, S, 'a stacked array is a directory', lambda c: (replace_by_dir(c['data'] / 'test_images.npy'), ['--data_dir', c['data'], '--workers', '1'])[1:] + (['test_images.npy', 'is a directory'],)),
        (3, M, '--out is a directory', lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--out', a_dir(c['out'] / 'f.csv')], ['is a directory'])),
        (3, M, '--out under a file', lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--out', a_file(c) / 'f.csv'], ['is a file, not a folder'])),
        (3, T, '--experiment_dir under a file', lambda c: (train(c, '--experiment_dir', a_file(c) / 'exp'), ['is a file, not a folder'])),
        (3, TB, '--experiment_dir under a file', lambda c: (train(c, '--experiment_dir', a_file(c) / 'exp', border=True), ['is a file, not a folder'])),
        (3, O, '--out is a directory', lambda c: (['--masks_fn', c['masks'], '--out', a_dir(c['out'] / 'o.json')], ['is a directory'])),
        (3, P, '--out is a directory', lambda c: (pred(c, '--out', a_dir(c['out'] / 'd.csv')), ['d.csv', 'is a directory'])),
        (3, P, '--out under a file', lambda c: (pred(c, '--out', a_file(c) / 's.csv'), ['is a file, not a folder'])),
        (3, P, '--out name too long', lambda c: (pred(c, '--out', long_name(c)), ['too long'])),
        (3, P, '--out a broken link', lambda c: (pred(c, '--out', broken_link(c, 's.csv')), ['does not exist'])),
        (3, PT, '--out .npy sibling is a directory', lambda c: (a_dir(c['out'] / 'x.npy'), pred(c, '--out', c['out'] / 'x.csv'))[1:] + (['x.npy', 'is a directory'],)),
        (3, PS, '--out is a directory', lambda c: (se(c, '--out', a_dir(c['out'] / 'd.csv')), ['is a directory'])),
        (3, PF, '--out is a directory', lambda c: (fold_avg(c, '--out', a_dir(c['out'] / 'd.csv')), ['is a directory'])),
        (3, TF, '--experiment_dir under a file', lambda c: (tf(c, exp=a_file(c) / 'tf'), ['is a file, not a folder'])),
        (3, R, '--out is a directory', lambda c: (recipe(c, '--out', a_dir(c['out'] / 'd.csv')), ['is a directory'])),
        (3, PL, '--out under a file', lambda c: (pseudo(c, '--out', a_file(c) / 'p', '--overwrite'), ['is a file, not a folder'])),
        # 4. values out of range, checked before any work
        (4, S, '--workers 0', lambda c: (['--data_dir', c['data'], '--workers', '0'], ['--workers'])),
        (4, M, '--seed -1', lambda c: (['--p', c['data'] / 'train.csv', '--n', '3', '--seed', '-1'], ['--seed'])),
        (4, M, '--n 1', lambda c: (['--p', c['data'] / 'train.csv', '--n', '1'], ['--n'])),
        (4, T, '--max_minutes -1', lambda c: (train(c, '--max_minutes', '-1'), ['--max_minutes'])),
        (4, T, '--limit -5', lambda c: (train(c, '--limit', '-5'), ['--limit'])),
        (4, T, '--seed -1', lambda c: (train(c, '--seed', '-1'), ['--seed'])),
        (4, T, '--max_minutes nan', lambda c: (train(c, '--max_minutes', 'nan'), ['--max_minutes', 'finite'])),
        (4, TB, '--fold -1', lambda c: (train(c, '--fold', '-1', border=True), ['--fold'])),
        (4, O, '--steps 1', lambda c: (['--masks_fn', c['masks'], '--steps', '1'], ['--steps'])),
        (4, P, '--workers -5', lambda c: (pred(c, '--workers', '-5'), ['--workers'])),
        (4, PT, '--threads -1', lambda c: (pred(c, '--threads', '-1'), ['--threads'])),
        (4, PS, '--cycles -1', lambda c: (se(c, '--cycles', '-1'), ['--cycles'])),
        (4, PF, '--min_size -3', lambda c: (fold_avg(c, '--min_size', '-3'), ['--min_size'])),
        (4, TF, '--jobs -1', lambda c: (tf(c, '--jobs', '-1'), ['--jobs'])),
        (4, TF, 'a train option out of range', lambda c: (tf(c, '--limit', '-5'), ['fold 0', '--limit'])),
        (4, R, '--tta nope', lambda c: (recipe(c, '--tta', 'nope'), ['--tta'])),
        (4, TF, 'a fold the split does not have, after one it has', lambda c: (tf(c, '--folds', '0,9'), ['fold 9 is not in', '--folds'])),
        (4, R, "--folds beyond the split", lambda c: (recipe(c, '--folds', '0-9'), ['is not in', '--folds'])),
        (4, R, "a recipe file's folds beyond the split", lambda c: (['--recipe', recipe_file(c, ('folds = "0-4"', 'folds = "0-9"')), '--data_dir', c['data'], '--experiment_dir', c['root'] / 'r', '--device', 'cpu'], ['is not in', '--folds'])),
        (4, R, '--stage1_args --seed -1', lambda c: (recipe(c, '--stage1_args', '--seed -1'), ['stage 1', '--seed'])),
        (4, R, '--stage2_args --max_minutes -2', lambda c: (recipe(c, '--stage2_args', '--max_minutes -2'), ['stage 2', '--max_minutes'])),
        (4, R, '--batch_size 0', lambda c: (recipe(c, '--batch_size', '0'), ['--batch_size'])),
        (4, PL, '--min_size -1', lambda c: (pseudo(c, '--min_size', '-1'), ['--min_size'])),
        # 5. hand-edited or foreign files
        (5, T, '--init snapshot with val_augs of a wrong type', lambda c: (train(c, '--init', snapshot_edit(c, lambda s: s.update(val_augs=5))), ["'val_augs'"])),
        (5, T, '--resume with a checkpoint config without loss', lambda c: (bad_checkpoint_config(c), resume(c))[1:] + (["'loss'", 'checkpoint.pth'],)),
        (5, TB, '--init snapshot without arch', lambda c: (train(c, '--init', snapshot_edit(c, lambda s: s.pop('arch')), border=True), ['not a snapshot'])),
        (5, O, 'train_config.json {}', lambda c: (config_edit(c, lambda cfg: {}), ['--masks_fn', c['masks']])[1:] + (['train_config.json', 'no key'],)),
        (5, O, "train_config.json fold 'zero'", lambda c: (config_edit(c, lambda cfg: {**cfg, 'fold': 'zero'}), ['--masks_fn', c['masks']])[1:] + (["'fold'"],)),
        (5, P, 'snapshot without val_augs', lambda c: (pred(c, script_args=['--snapshot', snapshot_edit(c, lambda s: s.pop('val_augs'))]), ["'val_augs'"])),
        (5, P, '--th auto with a .best.json of {}', lambda c: (best_json(c, {}), pred(c, '--th', 'auto'))[1:] + (["'threshold'"],)),
        (5, PT, 'snapshot with arch of a wrong type', lambda c: (pred(c, script_args=['--snapshot', snapshot_edit(c, lambda s: s.update(arch=['x']))]), ["'arch'", 'list'])),
        (5, PS, 'a cycle snapshot without val_transforms', lambda c: (pred(c, script_args=['--snapshot_dir', cycle_snapshot_edit(c, lambda s: s.pop('val_transforms'))]), ["'val_transforms'"])),
        (5, PF, '--oof of {}', lambda c: (fold_avg(c, '--th', 'auto', '--oof', json_file(c, {})), ["'threshold'"])),
        (5, PF, '--oof with min_size -4', lambda c: (fold_avg(c, '--min_size', 'auto', '--oof', json_file(c, {'threshold': 0.5, 'min_size': -4})), ["'min_size'"])),
        (5, TF, "fold's train_config.json fold 'zero'", lambda c: (config_edit(c, lambda cfg: {'fold': 'zero'}, a_dir(c['root'] / 'tf_fold0') / 'train_config.json'), tf(c))[1:] + (["'fold'"],)),
        (5, R, "stage 1 fold's train_config.json is a list", lambda c: ((a_dir(c['root'] / 'r_s1_fold0') / 'train_config.json').write_text('[]'), recipe(c))[1:] + (['train_config.json', 'list'],)),
        (5, R, 'a recipe file with an unknown option', lambda c: (recipe(c, '--recipe', recipe_file(c, ('limit = 32', 'limt = 32'))), ['mine.toml', 'limt', 'not a train.py option'])),
        (5, R, 'a recipe file that is not TOML', lambda c: (recipe(c, '--recipe', recipe_file(c, ('[stage1]', '[stage1'))), ['mine.toml', 'not valid TOML'])),
        (5, PL, '--oof of []', lambda c: (pseudo(c, '--th', 'auto', '--oof', json_file(c, [])), ['oof.json'])),
        # 6. options on --resume
        (6, T, '--resume --lr 0.5', lambda c: (resume(c, '--lr', '0.5'), ['--lr', '--resume'])),
        (6, T, '--resume --loss lovasz', lambda c: (resume(c, '--loss', 'lovasz'), ['--loss'])),
        (6, T, '--resume --data_dir /nowhere', lambda c: (resume(c, '--data_dir', '/nowhere'), ['--data_dir'])),
        (6, T, '--resume --train_augs', lambda c: (resume(c, '--train_augs', 'train_128_v1'), ['--train_augs'])),
        (6, TB, '--resume --loss', lambda c: (resume(c, '--loss', 'lovasz'), ['--loss'])),
        (6, TF, 'a fold resumed with another --loss', lambda c: (unfinished(c), tf(c, '--loss', 'lovasz', exp=c['root'] / 'exp'))[1:] + (['fold 0', '--loss'],)),
        (6, R, 'a stage-1 fold resumed with other options', lambda c: (shutil.copytree(unfinished(c), c['root'] / 'r_s1_fold0'), recipe(c))[1:] + (['stage 1', 'fold 0'],)),
        # 7. a broken model
        (7, O, 'validation masks with NaN', lambda c: (nan_into(c['masks']), ['--masks_fn', c['masks']])[1:] + (['NaN'],)),
        (7, P, 'snapshot with NaN weights', lambda c: (pred(c, script_args=['--snapshot', snapshot_edit(c, nan_weights)]), ['NaN'])),
        (7, PT, 'snapshot with NaN weights', lambda c: (pred(c, script_args=['--snapshot', snapshot_edit(c, nan_weights)]), ['NaN'])),
        (7, PS, 'a cycle snapshot with NaN weights', lambda c: (pred(c, script_args=['--snapshot_dir', cycle_snapshot_edit(c, nan_weights)]), ['NaN'])),
        (7, PF, 'probabilities with NaN', lambda c: ([nan_probs(c), '--data_dir', c['data'], '--out', c['out'] / 'avg.csv'], ['NaN'])),
        (7, PL, 'probabilities with NaN', lambda c: (pseudo(c, probs=nan_probs(c)), ['NaN'])),
        # 8. the message names the real problem
        (8, S, '--data_dir is a file', lambda c: (['--data_dir', a_file(c), '--workers', '1'], ['is a file, not a folder'])),
        (8, M, "rle '1 2.5'", lambda c: (['--p', bad_rle(c), '--n', '3'], ['rle_mask', '1 2.5'])),
        (8, M, "depth 'deep'", lambda c: (bad_depth(c), ['--p', c['data'] / 'train.csv', '--n', '3', '--stratify', 'depth'])[1:] + (['depths.csv', 'deep'],)),
        (8, T, '--experiment_dir is a plain file', lambda c: (train(c, '--experiment_dir', a_file(c)), ['is a file, not a folder'])),
        (8, TB, '--experiment_dir is a plain file', lambda c: (train(c, '--experiment_dir', a_file(c), border=True), ['is a file, not a folder'])),
        (8, O, '--masks_fn is a folder of no experiment', lambda c: (['--masks_fn', a_dir(c['out'] / 'masks.npy')], ['folder'])),
        (8, P, '--snapshot is a folder of no experiment', lambda c: (pred(c, script_args=['--snapshot', a_dir(c['out'] / 'snap')]), ['is a folder'])),
        (8, PT, '--data_dir is a file', lambda c: (pred(c, '--data_dir', a_file(c)), ['is a file, not a folder'])),
        (8, PS, '--snapshot_dir is a file', lambda c: (pred(c, script_args=['--snapshot_dir', a_file(c)]), ['plain'])),
        (8, PF, 'a masks file that is a folder', lambda c: ([a_dir(c['out'] / 'm.npy'), '--data_dir', c['data'], '--out', c['out'] / 'avg.csv'], ['is a folder'])),
        (8, TF, 'a fold directory that is a file', lambda c: (tf(c, exp=c['root'] / 'tf'), a_file(c, 'tf_fold0'))[:1] + (['is a file, not a folder'],)),
        (8, R, '--data_dir is a file', lambda c: (recipe(c, '--data_dir', a_file(c)), ['is a file, not a folder'])),
        (8, E, "truth rle '1 2.5'", lambda c: (['--submission', submission_with(c, [(i, '') for i in truth_ids(c)]), '--truth', bad_rle(c)], ['rle_mask'])),
        (8, E, '--submission is a folder', lambda c: (['--submission', a_dir(c['out'] / 's.csv'), '--truth', c['data'] / 'train.csv'], ['is a folder'])),
        (8, PL, '--probs is a folder', lambda c: (pseudo(c, probs=a_dir(c['out'] / 'p.npy')), ['is a folder'])),
    ]


def pngs_with(c, extra_name):
    folder = a_dir(c['out'] / 'pngs')
    src = sorted((c['data'] / 'test' / 'images').iterdir())[0]
    for name in ('a.png', extra_name):
        shutil.copy(src, folder / name)


def replace_by_dir(path):
    path.unlink()
    path.mkdir()


def broken_link(c, name):
    link = c['out'] / name
    os.symlink(c['root'] / 'gone' / name, link)
    return link


def best_json(c, record):
    from utils.snapshots import best_json_path
    best_json_path(c['masks']).write_text(json.dumps(record))


def recipe_file(c, edit):
    """A user's recipe: the smoke preset's file with `edit` (old, new) applied."""
    p = c['out'] / 'mine.toml'
    p.write_text((ROOT / 'recipes' / 'smoke.toml').read_text().replace(*edit))
    return p


def json_file(c, record):
    p = c['out'] / 'oof.json'
    p.write_text(json.dumps(record))
    return p


def nan_into(path):
    a = np.load(path).astype(np.float32)
    a[0, 0, 0] = np.nan
    np.save(path, a)


ROWS = rows()


def case_id(row):
    cls, script, name, _ = row
    return f"{cls}-{os.path.basename(script)}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"


@pytest.fixture(scope='module')
def results(tmp_path_factory):
    env = build(tmp_path_factory)
    tmp = tmp_path_factory.mktemp('matrix')
    cases = []
    for row in ROWS:
        c = copy_env(env, tmp / case_id(row))
        argv, phrases = row[3](c)
        cases.append({'argv': [row[1], *argv], 'watch': [c['root']], 'cwd': c['root'], 'phrases': phrases})
    out = run_scripts([{k: v for k, v in case.items() if k != 'phrases'} for case in cases])
    return {case_id(row): (r, case['phrases']) for row, case, r in zip(ROWS, cases, out)}


@pytest.mark.parametrize('key', [case_id(r) for r in ROWS])
def test_bad_input_is_one_line_and_changes_nothing(results, key):
    result, phrases = results[key]
    assert_refused(result, phrases)


def test_every_entry_point_meets_every_class():
    covered = {(script, cls) for cls, script, _, _ in ROWS}
    assert {s for _, s, _, _ in ROWS} == set(ENTRY_POINTS)
    assert {c for c, _, _, _ in ROWS} == set(CLASSES)
    missing = [(s, c) for s in ENTRY_POINTS for c in CLASSES if (s, c) not in covered and (s, c) not in NOT_APPLICABLE]
    assert missing == [], f"add a row, or say in NOT_APPLICABLE why the class cannot happen there: {missing}"
    stale = [k for k in NOT_APPLICABLE if k in covered]
    assert stale == [], f"covered by a row, so not inapplicable: {stale}"
    assert len({case_id(r) for r in ROWS}) == len(ROWS)
