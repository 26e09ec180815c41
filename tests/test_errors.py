"""Bad input: every script answers with one line naming the problem and the fix, exit status 2,
no traceback, and leaves the files it was pointed at as they were.

The scripts run as real processes (their own exit status, stderr and `__main__`), but forked from
one server process that has already imported torch, torchvision and albumentations: paying for
those imports in a fresh interpreter for every case would dwarf the checks themselves.
"""
import collections
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from bad_input_env import run_scripts, visible_lines  # the one fork-server runner of the bad-input tests
from conftest import ROOT, cut_real

LITE = ['--arch', 'unet_lite', '--pretrained', 'none', '--n_epochs', '1', '--limit', '8', '--batch_size', '4',
        '--train_augs', 'train_128_v3', '--val_augs', 'val_128', '--val_transforms', 'crop_from_128', '--threads', '1']


# ---------------------------------------------------------------- running scripts

def assert_one_line_error(result, phrases, prog=None):
    """Exit status 2 and exactly one `prog: error: ...` line on stderr containing every phrase."""
    lines = visible_lines(result['stderr'])
    assert 'Traceback' not in result['stderr'], result['stderr']
    assert result['code'] == 2, (result['code'], result['stderr'])
    assert len(lines) == 1, result['stderr']
    assert ': error: ' in lines[0], lines[0]
    if prog:
        assert lines[0].startswith(f'{prog}: error: '), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------- the bad inputs

def copy_data(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        p = dst / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return dst


def fake_experiment(root, data, arch='unet_lite', n_val=None):
    """A finished-looking run (config, log, snapshot, val masks, checkpoint) without training one."""
    import torch

    from net.models import build_model
    from utils.run_folder import Experiment
    exp = Experiment(root)
    exp.prepare(resume=False, overwrite=False)
    exp.release()
    folds = pd.read_csv(data / 'train_with_folds.csv')
    n_val = int((folds['fold'] == 0).sum()) if n_val is None else n_val
    config = {'arch': arch, 'fold': 0, 'limit': 0, 'cycles': 1, 'data_dir': str(data),
              'folds_csv': str(data / 'train_with_folds.csv'), 'val_augs': 'val_128', 'val_transforms': 'crop_from_128'}
    exp.write_config(config)
    model = build_model(arch, pretrained=None)
    metrics = {'val_loss': 0.5, 'val_score': 0.5, 'val_iou': 0.5}
    snap = exp.save_snapshot(model.state_dict(), config, 1, 0, metrics, np.full((n_val, 101, 101), 0.25, np.float32))
    exp.write_log([{'epoch': 1, 'cycle': 0, 'train_loss': 0.6, **metrics, 'lr': 1e-4, 'seconds': 1.0}])
    torch.save({'model': model.state_dict()}, exp.checkpoint_path)
    return snap


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """Good data (stacked, folded), bad copies of it, and a fake experiment with a snapshot."""
    import torch

    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    tmp = tmp_path_factory.mktemp('errors')
    raw = cut_real(tmp / 'raw', 32, 8)
    data = copy_data(raw, tmp / 'data')
    stack(['--data_dir', str(data), '--workers', '1'])
    make_folds(['--p', str(data / 'train.csv'), '--n', '4'])
    ids = pd.read_csv(data / 'train.csv', dtype=str)['id']
    e = {'tmp': tmp, 'raw': raw, 'data': data, 'first_id': ids[0]}

    # Stacked arrays exist already in the PNG cases, so that the test sees they survive a failed restack.
    e['corrupt_png'] = copy_data(data, tmp / 'corrupt_png')
    png = e['corrupt_png'] / 'train' / 'images' / f'{ids[3]}.png'
    png.write_bytes(png.read_bytes()[:200])
    e['corrupt_id'] = ids[3]
    e['no_mask'] = copy_data(data, tmp / 'no_mask')
    (e['no_mask'] / 'train' / 'masks' / f'{ids[5]}.png').unlink()
    e['missing_mask_id'] = ids[5]
    e['wrong_size'] = copy_data(data, tmp / 'wrong_size')
    cv2.imwrite(str(e['wrong_size'] / 'test' / 'images' / f"{pd.read_csv(data / 'sample_submission.csv', dtype=str)['id'][2]}.png"),
                np.zeros((64, 80), np.uint8))
    e['no_train_csv'] = copy_data(data, tmp / 'no_train_csv', ['train.csv'])
    e['no_sub_csv'] = copy_data(data, tmp / 'no_sub_csv', ['sample_submission.csv'])
    e['no_folds'] = copy_data(data, tmp / 'no_folds', ['train_with_folds.csv'])
    folds_text = (data / 'train_with_folds.csv').read_text().splitlines()
    e['folds_not_int'] = copy_data(data, tmp / 'folds_not_int')
    (e['folds_not_int'] / 'train_with_folds.csv').write_text('\n'.join(
        folds_text[:3] + [folds_text[3].rsplit(',', 1)[0] + ',two'] + folds_text[4:]) + '\n')
    e['folds_ragged'] = copy_data(data, tmp / 'folds_ragged')
    (e['folds_ragged'] / 'train_with_folds.csv').write_text('\n'.join(folds_text[:5] + [folds_text[5] + ',9'] + folds_text[6:]) + '\n')
    e['folds_empty'] = copy_data(data, tmp / 'folds_empty')
    (e['folds_empty'] / 'train_with_folds.csv').write_text('')
    e['unstacked'] = raw
    e['stale_arrays'] = copy_data(data, tmp / 'stale_arrays')
    for name in ('train_images.npy', 'train_masks.npy'):
        np.save(e['stale_arrays'] / name, np.load(data / name)[:20])
    e['short_test'] = copy_data(data, tmp / 'short_test')
    np.save(e['short_test'] / 'test_images.npy', np.load(data / 'test_images.npy')[:5])

    e['exp'] = tmp / 'exp_done'
    e['snap'] = fake_experiment(e['exp'], data)
    e['val_masks'] = e['snap'].parent / f"val_masks_{e['snap'].name}.npy"
    e['exp_config_only'] = tmp / 'exp_config_only'
    e['exp_config_only'].mkdir()
    (e['exp_config_only'] / 'train_config.json').write_text('{}')
    e['exp_bad_ckpt'] = tmp / 'exp_bad_ckpt'
    (e['exp_bad_ckpt'] / 'logs').mkdir(parents=True)
    (e['exp_bad_ckpt'] / 'checkpoint.pth').write_bytes(b'not a checkpoint')

    bad = tmp / 'bad'
    bad.mkdir()
    e['bad'] = bad
    (bad / 'text.pth').write_text('hello, not a snapshot\n')
    torch.save({'weights': torch.zeros(3)}, bad / 'plain_dict.pth')
    snap = torch.load(e['snap'], weights_only=True)
    torch.save({**snap, 'model': dict(list(snap['model'].items())[:-3])}, bad / 'misfit.pth')
    n_test = 8
    np.save(bad / 'good.npy', np.full((n_test, 101, 101), 0.7, np.float16))
    np.save(bad / 'small.npy', np.full((n_test, 64, 64), 0.7, np.float16))
    np.save(bad / 'short.npy', np.full((n_test - 1, 101, 101), 0.7, np.float16))
    nan = np.full((n_test, 101, 101), 0.7, np.float32)
    nan[3, 50, 50] = np.nan
    np.save(bad / 'nan.npy', nan)
    (bad / 'existing.csv').write_text('id,rle_mask\nold,1 1\n')
    # Validation masks beside the snapshot, so that optimize_threshold.py finds the experiment's fold.
    np.save(e['snap'].parent / 'val_masks_wrong_length.npy', np.full((3, 101, 101), 0.7, np.float16))
    vn = np.full((len(np.load(e['val_masks'])), 101, 101), 0.7, np.float32)
    vn[0, 0, 0] = np.nan
    np.save(e['snap'].parent / 'val_masks_nan.npy', vn)
    np.save(bad / 'val_masks_orphan.npy', np.full((3, 101, 101), 0.7, np.float16))
    # Test probabilities inside the experiment, before any out-of-fold search was run.
    (e['exp'] / 'predictions').mkdir()
    np.save(e['exp'] / 'predictions' / 'test.npy', np.full((n_test, 101, 101), 0.7, np.float16))
    # A fold directory that holds another fold's run.
    e['tf_other'] = tmp / 'tfo_fold1'
    e['tf_other'].mkdir()
    (e['tf_other'] / 'train_config.json').write_text('{"fold": 0}')
    return e


def cases(e):
    """name -> (argv, phrases the one line must hold, dirs that must stay unchanged)."""
    d, tmp = e['data'], e['tmp']
    train = ['train.py', *LITE, '--data_dir']
    new_exp = lambda name: ['--experiment_dir', tmp / 'new' / name]  # noqa: E731
    pred = ['predict.py', '--snapshot', e['snap'], '--data_dir', d, '--threads', '1', '--out', e['bad'] / 'existing.csv']
    c = {
        # stacking
        'stack: data dir missing': (['utils/stack_and_save.py', '--data_dir', tmp / 'nowhere'],
                                    ['data directory not found', 'nowhere', '--data_dir'], []),
        'stack: train.csv missing': (['utils/stack_and_save.py', '--data_dir', e['no_train_csv']],
                                     ['train.csv not found', 'pass the right --data_dir'], [e['no_train_csv']]),
        'stack: sample_submission.csv missing': (['utils/stack_and_save.py', '--data_dir', e['no_sub_csv']],
                                                 ['sample_submission.csv not found'], [e['no_sub_csv']]),
        'stack: corrupt png': (['utils/stack_and_save.py', '--data_dir', e['corrupt_png']],
                               [f"{e['corrupt_id']}.png", 'cannot decode', 'replace it'], [e['corrupt_png']]),
        'stack: mask missing': (['utils/stack_and_save.py', '--data_dir', e['no_mask']],
                                ['mask missing', f"masks/{e['missing_mask_id']}.png"], [e['no_mask']]),
        'stack: wrong image size': (['utils/stack_and_save.py', '--data_dir', e['wrong_size']],
                                    ['is 80x64, not 101x101'], [e['wrong_size']]),
        'folds: train.csv missing': (['utils/make_folds.py', '--p', e['no_train_csv'] / 'train.csv', '--n', '4'],
                                     ['train.csv not found', '--p'], [e['no_train_csv']]),
        'folds: too many folds': (['utils/make_folds.py', '--p', d / 'train.csv', '--n', '99'],
                                  ['--n 99', 'does not fit 32 images'], [d]),
        'folds: more folds than sklearn can stratify': (['utils/make_folds.py', '--p', d / 'train.csv', '--n', '20',
                                                         '--method', 'sklearn'],
                                                        ['cannot make 20 folds', 'n_splits=20', '--method deal'], [d]),
        # training: data
        'train: data dir missing': ([*train, tmp / 'nowhere', *new_exp('a')], ['data directory not found'], [tmp / 'new']),
        'train: arrays missing': ([*train, e['unstacked'], *new_exp('b')],
                                  ['stacked train images not found', 'python3 utils/stack_and_save.py --data_dir'],
                                  [e['unstacked'], tmp / 'new']),
        'train: train.csv missing': ([*train, e['no_train_csv'], *new_exp('c')], ['train.csv not found'],
                                     [e['no_train_csv'], tmp / 'new']),
        'train: folds missing': ([*train, e['no_folds'], *new_exp('d')],
                                 ['folds file not found', 'utils/make_folds.py'], [e['no_folds'], tmp / 'new']),
        'train: fold not a number': ([*train, e['folds_not_int'], *new_exp('n1')],
                                     ["has a fold that is not a whole number ('two')", 'utils/make_folds.py'],
                                     [e['folds_not_int'], tmp / 'new']),
        'train: folds row with an extra field': ([*train, e['folds_ragged'], *new_exp('n2')],
                                                 ['is not a readable CSV', 'line 6 has', 'utils/make_folds.py'],
                                                 [e['folds_ragged'], tmp / 'new']),
        'train: folds file empty': ([*train, e['folds_empty'], *new_exp('n3')],
                                    ['is not a readable CSV (no header line)', 'utils/make_folds.py'],
                                    [e['folds_empty'], tmp / 'new']),
        'train: arrays stacked from another train.csv': ([*train, e['stale_arrays'], *new_exp('k')],
                                                         ['train_images.npy has 20 images but train.csv lists 32',
                                                          'stack_and_save.py'], [e['stale_arrays'], tmp / 'new']),
        'train: fold not in folds file': ([*train, d, '--fold', '7', *new_exp('e')],
                                          ['fold 7 is not in', 'folds 0..3', '--fold'], [d, tmp / 'new']),
        'train: existing run': ([*train, d, '--experiment_dir', e['exp']],
                                ['already holds a run', '--resume', '--overwrite'], [e['exp']]),
        'train: --overwrite, then a bad fold': ([*train, d, '--fold', '7', '--experiment_dir', e['exp'], '--overwrite'],
                                                ['fold 7 is not in'], [e['exp']]),
        'train: nothing to resume': ([*train, d, '--experiment_dir', e['exp_config_only'], '--resume'],
                                     ['nothing to resume', '--overwrite'], [e['exp_config_only']]),
        'train: unreadable checkpoint': ([*train, d, '--experiment_dir', e['exp_bad_ckpt'], '--resume'],
                                         ['checkpoint.pth', '--overwrite'], [e['exp_bad_ckpt']]),
        'train: resume and overwrite': ([*train, d, *new_exp('f'), '--resume', '--overwrite'],
                                        ['--overwrite', 'not allowed with argument --resume'], [tmp / 'new']),
        'train: zero epochs': ([*train, d, *new_exp('g'), '--n_epochs', '0'], ['--n_epochs must be at least 1'], []),
        'train: batch larger than the data': ([*train, d, *new_exp('h'), '--batch_size', '64'],
                                              ['8 training images', '--batch_size'], [tmp / 'new']),
        'train: --val_augs of another input size': ([*train, d, *new_exp('v1'), '--val_augs', 'val_256'],
                                                     ['--val_augs val_256 gives 256x256 inputs',
                                                      '--train_augs train_128_v3', 'leave --val_augs out'], [tmp / 'new']),
        'train: --val_transforms that does not undo --val_augs': ([*train, d, *new_exp('v2'), '--val_transforms',
                                                                    'resize_from_any'],
                                                                   ['does not undo --val_augs val_128',
                                                                    '--val_transforms crop_from_128'], [tmp / 'new']),
        'train_border: no border output': (['train_border.py', *LITE, '--loss', 'BCE', '--data_dir', d, *new_exp('i')],
                                           ['no border output', 'wide_resnet_border'], [tmp / 'new']),
        # prediction
        'predict: snapshot missing': (['predict.py', '--snapshot', tmp / 'no_snapshot', '--data_dir', d],
                                      ['snapshot not found', 'no_snapshot'], [d]),
        'predict: snapshot is a text file': (['predict.py', '--snapshot', e['bad'] / 'text.pth', '--data_dir', d],
                                             ['text.pth is not a readable snapshot'], [e['bad']]),
        'predict: torch file that is no snapshot': (['predict.py', '--snapshot', e['bad'] / 'plain_dict.pth', '--data_dir', d],
                                                    ['plain_dict.pth is not a snapshot made by train.py'], [e['bad']]),
        'predict: snapshot of another architecture': ([*pred, '--arch', 'unet_resnet34_v1'],
                                                      ['is a unet_lite snapshot, not unet_resnet34_v1'], [e['bad'], e['exp']]),
        'predict: weights that do not fit': (['predict.py', '--snapshot', e['bad'] / 'misfit.pth', '--data_dir', d,
                                              '--out', e['bad'] / 'existing.csv'],
                                             ['does not fit architecture unet_lite'], [e['bad']]),
        'predict: test arrays missing': ([*pred[:4], e['unstacked'], *pred[5:]],
                                         ['stacked test images not found', 'utils/stack_and_save.py'], [e['bad'], e['unstacked']]),
        'predict: sample_submission.csv missing': ([*pred[:4], e['no_sub_csv'], *pred[5:]],
                                                   ['sample_submission.csv not found'], [e['bad'], e['no_sub_csv']]),
        'predict: test count differs from sample_submission': ([*pred[:4], e['short_test'], *pred[5:]],
                                                               ['test_images.npy has 5 images', 'lists 8'], [e['bad']]),
        'predict: --val_augs of another input size': ([*pred, '--val_augs', 'val_112'],
                                                      ['--val_augs val_112 gives 112x112 inputs', 'the snapshot',
                                                       '128x128'], [e['bad'], e['exp']]),
        'predict: --out not a csv': ([*pred[:-2], '--out', e['bad'] / 'sub.txt'], ['must end in .csv'], [e['bad']]),
        'predict_se: no snapshot folder': (['predict_se.py', '--snapshot_dir', tmp / 'nowhere', '--data_dir', d],
                                           ['snapshot folder not found'], []),
        'predict_se: no cycles': (['predict_se.py', '--snapshot_dir', e['exp'], '--data_dir', d],
                                  ['no cycle_k folders', '--cycles'], [e['exp']]),
        'fold_avg: different shapes': (['predict_fold_avg.py', e['bad'] / 'good.npy', e['bad'] / 'small.npy',
                                        '--data_dir', d, '--out', e['bad'] / 'existing.csv'],
                                       ['small.npy has shape (8, 64, 64)'], [e['bad']]),
        'fold_avg: NaN': (['predict_fold_avg.py', e['bad'] / 'good.npy', e['bad'] / 'nan.npy', '--data_dir', d,
                           '--out', e['bad'] / 'existing.csv'], ['nan.npy contains NaN'], [e['bad']]),
        'fold_avg: count differs from sample_submission': (['predict_fold_avg.py', e['bad'] / 'short.npy', '--data_dir', d,
                                                            '--out', e['bad'] / 'existing.csv'],
                                                           ['short.npy has 7 masks', 'sample_submission.csv lists 8'], [e['bad']]),
        'fold_avg: file missing': (['predict_fold_avg.py', e['bad'] / 'absent.npy', '--data_dir', d],
                                   ['probability masks not found', 'absent.npy'], [e['bad']]),
        'fold_avg: sample_submission.csv missing': (['predict_fold_avg.py', e['bad'] / 'good.npy', '--data_dir', e['no_sub_csv'],
                                                     '--out', e['bad'] / 'existing.csv'],
                                                    ['sample_submission.csv not found'], [e['bad']]),
        'threshold: masks length differs from fold': (['optimize_threshold.py', '--masks_fn', e['snap'].parent / 'val_masks_wrong_length.npy'],
                                                      ['has 3 masks but its fold has 8 images'], [e['exp']]),
        'threshold: NaN': (['optimize_threshold.py', '--masks_fn', e['snap'].parent / 'val_masks_nan.npy'],
                           ['contains NaN'], [e['exp']]),
        'threshold: masks missing': (['optimize_threshold.py', '--masks_fn', tmp / 'absent.npy'],
                                     ['validation masks not found'], []),
        'threshold: not in an experiment': (['optimize_threshold.py', '--masks_fn', e['bad'] / 'val_masks_orphan.npy'],
                                            ['no train_config.json found'], [e['bad']]),
        'threshold: masks file is a snapshot': (['optimize_threshold.py', '--masks_fn', e['snap']],
                                                ['is not a .npy array'], [e['exp']]),
        'fold_avg: --th auto outside an experiment': (['predict_fold_avg.py', e['bad'] / 'good.npy', '--th', 'auto',
                                                        '--data_dir', d, '--out', e['bad'] / 'existing.csv'],
                                                       ['good.npy is not in an experiment', '--oof PATH'], [e['bad']]),
        'fold_avg: --th auto before the out-of-fold search': (['predict_fold_avg.py', e['exp'] / 'predictions' / 'test.npy',
                                                                '--min_size', 'auto', '--data_dir', d,
                                                                '--out', e['bad'] / 'existing.csv'],
                                                               ['auto need', 'exp_done.oof.best.json',
                                                                'python3 optimize_threshold.py --masks_fn'],
                                                               [e['bad'], e['exp']]),
        'fold_avg: --oof missing': (['predict_fold_avg.py', e['bad'] / 'good.npy', '--th', 'auto', '--oof', tmp / 'absent.json',
                                     '--data_dir', d, '--out', e['bad'] / 'existing.csv'],
                                    ['auto need', 'absent.json'], [e['bad']]),
        'threshold: one fold twice': (['optimize_threshold.py', '--masks_fn', e['exp'], e['val_masks']],
                                      ['validate on the same images', 'one experiment per fold'], [e['exp']]),
        'threshold: --out not a json': (['optimize_threshold.py', '--masks_fn', e['exp'], '--out', tmp / 'oof.txt'],
                                        ['--out', 'must end in .json'], [e['exp']]),
        'train_folds: folds not a list': (['train_folds.py', '--folds', '0..4', '--experiment_dir', tmp / 'tf', *LITE],
                                          ['--folds', 'not a fold list', '0-4'], [tmp]),
        'train_folds: range backwards': (['train_folds.py', '--folds', '4-1', '--experiment_dir', tmp / 'tf', *LITE],
                                         ['runs backwards', 'pass 1-4'], [tmp]),
        'train_folds: --fold given': (['train_folds.py', '--folds', '0-1', '--experiment_dir', tmp / 'tf', '--fold', '0'],
                                      ['--fold is set by train_folds.py', '--folds'], [tmp]),
        'train_folds: --resume given': (['train_folds.py', '--folds', '0-1', '--experiment_dir', tmp / 'tf', '--resume'],
                                        ['--resume is set by train_folds.py', 'automatic'], [tmp]),
        'train_folds: no such GPU': (['train_folds.py', '--folds', '0-1', '--experiment_dir', tmp / 'tf', '--gpus', '99'],
                                     ['--gpus 99'], [tmp]),
        'train_folds: directory of another fold': (['train_folds.py', '--folds', '1', '--experiment_dir', tmp / 'tfo', *LITE,
                                                    '--data_dir', d], ['holds a run of fold 0, not fold 1'], [e['tf_other']]),
        'train_folds: fold not in the folds file': (['train_folds.py', '--folds', '0,4', '--experiment_dir', tmp / 'tf', *LITE,
                                                     '--data_dir', d],
                                                    ['fold 4 is not in', 'it has folds 0..3', 'pass --folds'], [d, e['exp']]),
        # a fold that fails as it trains: reported with its log, and the folds after it are not started
        'train_folds: a fold fails training': (['train_folds.py', '--folds', '3,0', '--experiment_dir', tmp / 'tfi', *LITE,
                                                '--data_dir', d, '--init', tmp / 'no_init_fold{fold}'],
                                               ['fold 3 failed training (exit 2', 'tfi_fold3/train_folds.log',
                                                'not started: fold 0'], [d, e['exp']]),
        'evaluate: submission missing': (['tools/evaluate.py', '--submission', tmp / 'absent.csv', '--truth', d / 'train.csv'],
                                         ['submission not found'], []),
    }
    # Every registered-name option: a typo is one line that lists the valid names.
    for opt, valid in (('arch', 'unet_lite'), ('loss', 'lovasz'), ('optimizer', 'adam_1e-4'), ('scheduler', 'cosine'),
                       ('train_augs', 'train_128_v1'), ('val_augs', 'val_128_resize'), ('val_transforms', 'resize_from_any')):
        c[f'train: unknown {opt}'] = ([*train, d, *new_exp('j'), f'--{opt}', 'nope'],
                                      [f'argument --{opt}', "invalid choice: 'nope'", valid], [])
    for opt, valid in (('arch', 'wide_resnet_v1'), ('val_augs', 'val_256'), ('val_transforms', 'crop_from_128')):
        c[f'predict: unknown {opt}'] = ([*pred, f'--{opt}', 'nope'], [f'argument --{opt}', "invalid choice: 'nope'", valid],
                                        [e['bad']])
    c['predict_tta: unknown tta'] = (['predict_tta.py', *pred[1:], '--tta', 'nope'],
                                     ["argument --tta: invalid choice: 'nope'", 'null_hflip'], [e['bad']])
    for script, th in (('predict.py', '1.5'), ('predict_fold_avg.py', '-0.1'), ('predict_se.py', 'half')):
        first = {'predict.py': ['--snapshot', e['snap']], 'predict_fold_avg.py': [e['bad'] / 'good.npy'],
                 'predict_se.py': ['--snapshot_dir', e['exp']]}[script]
        c[f'{script}: threshold {th}'] = ([script, *first, '--th', th, '--data_dir', d],
                                          ['argument --th', th, '[0, 1]'], [e['bad']])
    return c


HELP = {'help: train.py': ['train.py', '--help'], 'help: predict_tta.py': ['predict_tta.py', '--help']}


@pytest.fixture(scope='module')
def results(env):
    """Every case's result, by name; one server run (the --help calls ride along)."""
    named = {name: (argv, watch) for name, (argv, _, watch) in cases(env).items()}
    named.update({name: (argv, []) for name, argv in HELP.items()})
    out = run_scripts([{'argv': argv, 'watch': watch} for argv, watch in named.values()], timeout=300)
    return dict(zip(named, out))


# Only the names are needed at collection time, before the fixture has made any file.
CASE_NAMES = list(cases(collections.defaultdict(lambda: Path('/placeholder'))))


@pytest.mark.real_data
@pytest.mark.parametrize('name', CASE_NAMES)
def test_bad_input(name, env, results):
    argv, phrases, _ = cases(env)[name]
    r = results[name]
    prog = Path(str(argv[0])).name
    assert_one_line_error(r, phrases, prog)
    assert r['after'] == r['before'], f"{name} changed files: " + ', '.join(
        sorted(k for k in set(r['after']) | set(r['before']) if r['after'].get(k) != r['before'].get(k)))


@pytest.mark.parametrize('interruption', [OSError('disk full'), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch, interruption):
    """A writer that dies half-way (an error, Ctrl-C) leaves the previous file whole and no temporary."""
    from utils import io
    path = tmp_path / 'out.npy'
    io.save_npy(path, np.arange(5))

    def dies_half_way(f, array, allow_pickle):
        f.write(b'\x93NUMPY half')
        raise interruption
    monkeypatch.setattr(io.np, 'save', dies_half_way)
    with pytest.raises(type(interruption)):
        io.save_npy(path, np.arange(7))
    monkeypatch.undo()
    assert np.array_equal(np.load(path), np.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ['out.npy']


@pytest.mark.real_data
def test_help_lists_registered_names(results):
    train, tta = results['help: train.py'], results['help: predict_tta.py']
    assert train['code'] == 0 and 'unet_lite' in train['stdout'] and 'bce_lovasz' in train['stdout']
    assert tta['code'] == 0 and 'null_hflip' in tta['stdout']

