"""Issue 19's examples, one test each: bad input is one line (exit 2, no traceback) and leaves every file
as it was. The scripts run in-process through run_cli, as their `__main__` does; the matrix of every
entry point and class, as real processes, is tests/test_bad_input_matrix.py."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from bad_input_env import LITE, build, copy_env, duplicate_row, file_hashes, nan_weights, rewrite_snapshot
from conftest import ROOT
from utils.errors import UserError, run_cli

# the cases run on a small stacked cut of the real data (bad_input_env.build)
pytestmark = pytest.mark.real_data


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    return build(tmp_path_factory)


@pytest.fixture
def c(env, tmp_path):
    return copy_env(env, tmp_path / 'case')


def refused(main, argv, capsys, *phrases, watch=()):
    """Run main(argv) as the CLI would; assert exit 2, one error line with `phrases`, and `watch` unchanged."""
    before = file_hashes(watch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln.rsplit('\r', 1)[-1].strip() for ln in err.split('\n') if ln.rsplit('\r', 1)[-1].strip()]
    assert e.value.code == 2, err
    assert len(lines) == 1 and ': error: ' in lines[0], err
    for p in phrases:
        assert p in lines[0], f"{p!r} not in {lines[0]!r}"
    assert file_hashes(watch) == before
    return lines[0]


def predict_main(argv):
    from predict import main
    return main(argv)


def train_main(argv):
    from train import main
    return main(argv)


# ---------------------------------------------------------------- 1. an output never replaces an input

def test_predict_out_beside_the_stacked_test_set_is_refused(c, capsys):
    line = refused(predict_main, ['--snapshot', c['snap'], '--data_dir', c['data'], '--threads', '1',
                                  '--out', c['data'] / 'test_images.csv'], capsys,
                   'test_images.npy', 'must not replace', watch=[c['data'], c['exp']])
    assert 'pass another output path' in line
    assert not (c['data'] / 'test_images.csv').exists()


def test_fold_avg_save_probs_over_its_own_input_is_refused(c, capsys):
    from predict_fold_avg import main
    probs = c['out'] / 'a.npy'
    np.save(probs, np.full((6, 101, 101), 0.5, np.float16))
    refused(main, [probs, '--data_dir', c['data'], '--out', c['out'] / 'a.csv', '--save_probs'], capsys,
            'a.npy', 'must not replace', watch=[c['out'], c['data']])
    assert not (c['out'] / 'a.csv').exists()


def test_make_folds_out_over_train_csv_is_refused(c, capsys):
    from utils.make_folds import main
    refused(main, ['--p', c['data'] / 'train.csv', '--n', '3', '--out', c['data'] / 'train.csv'], capsys,
            'train.csv', 'must not replace', watch=[c['data']])


@pytest.mark.parametrize('name,dtype,value', [('test_images.npy', np.float16, 0.5), ('train_images.npy', np.float32, 3),
                                              ('train_masks.npy', np.uint8, 255)])
def test_a_stacked_array_of_the_wrong_kind_says_to_restack(c, capsys, name, dtype, value):
    shape = np.load(c['data'] / name, mmap_mode='r').shape
    np.save(c['data'] / name, np.full(shape, value, dtype))
    if name == 'test_images.npy':
        argv, main = ['--snapshot', c['snap'], '--data_dir', c['data'], '--threads', '1', '--out', c['out'] / 's.csv'], predict_main
    else:
        argv, main = [*LITE, '--data_dir', c['data'], '--experiment_dir', c['root'] / 'new'], train_main
    line = refused(main, argv, capsys, name, 'stack_and_save.py', watch=[c['data'], c['out']])
    assert (np.dtype(dtype).name in line) if name != 'train_masks.npy' else ('0 and 1' in line)
    assert not (c['root'] / 'new').exists()


def test_stack_and_save_still_remakes_its_arrays_after_another_command_read_them(c, capsys):
    """The guard is per command: a predict that read the arrays does not stop a later restack in the same process."""
    from utils.stack_and_save import main as stack
    run_cli(predict_main, [str(a) for a in ['--snapshot', c['snap'], '--data_dir', c['data'], '--threads', '1',
                                            '--out', c['out'] / 's.csv']])
    before = (c['data'] / 'test_images.npy').stat().st_mtime_ns
    run_cli(stack, ['--data_dir', str(c['data']), '--workers', '1'])
    assert (c['data'] / 'test_images.npy').stat().st_mtime_ns != before


# ---------------------------------------------------------------- 2. ids are unique plain names

def test_a_duplicated_train_row_is_refused_everywhere(c, capsys):
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    duplicate_row(c['data'] / 'train.csv', 3)
    watch = [c['data']]
    for main, argv in ((stack, ['--data_dir', c['data'], '--workers', '1']),
                       (make_folds, ['--p', c['data'] / 'train.csv', '--n', '3']),
                       (train_main, [*LITE, '--data_dir', c['data'], '--experiment_dir', c['root'] / 'new'])):
        refused(main, argv, capsys, 'train.csv', 'twice', watch=watch)
    assert not (c['root'] / 'new').exists()


@pytest.mark.parametrize('bad', ['../escape', 'a/b', ''])
def test_an_id_that_is_a_path_or_empty_is_refused(c, capsys, bad):
    from utils.stack_and_save import main as stack
    lines = (c['data'] / 'train.csv').read_text().splitlines()
    lines[2] = bad + ',' + lines[2].split(',', 1)[1]
    (c['data'] / 'train.csv').write_text('\n'.join(lines) + '\n')
    line = refused(stack, ['--data_dir', c['data'], '--workers', '1'], capsys, 'train.csv', 'row 3', watch=[c['data']])
    assert ('empty id' in line) if not bad else (repr(bad) in line)


def test_a_png_without_a_name_gives_no_id(c, capsys):
    folder = c['out'] / 'pngs'
    folder.mkdir()
    for name in ('a.png', '.png'):
        (folder / name).write_bytes((c['data'] / 'test' / 'images' / next(
            p.name for p in (c['data'] / 'test' / 'images').iterdir())).read_bytes())
    refused(predict_main, ['--snapshot', c['snap'], '--images', folder, '--threads', '1', '--out', c['out'] / 's.csv'],
            capsys, '.png', 'no name', watch=[c['out']])


# ---------------------------------------------------------------- 3. a write that fails is one line

def test_out_that_is_a_directory_leaves_no_npy_behind(c, capsys):
    (c['out'] / 'sub.csv').mkdir()
    refused(predict_main, ['--snapshot', c['snap'], '--data_dir', c['data'], '--threads', '1', '--out', c['out'] / 'sub.csv'],
            capsys, 'sub.csv', 'is a directory', watch=[c['out'], c['exp']])
    assert not (c['out'] / 'sub.npy').exists()


@pytest.mark.parametrize('kind', ['under a file', 'too long', 'broken link', 'directory'])
def test_every_output_path_problem_is_one_line_naming_it(tmp_path, kind):
    from utils import io
    (tmp_path / 'file').write_text('x')
    path = {'under a file': tmp_path / 'file' / 'out.npy', 'too long': tmp_path / ('n' * 250 + '.npy'),
            'broken link': tmp_path / 'link.npy', 'directory': tmp_path / 'dir.npy'}[kind]
    if kind == 'broken link':
        os.symlink(tmp_path / 'nowhere' / 'x.npy', path)
    if kind == 'directory':
        path.mkdir()
    before = file_hashes([tmp_path])
    with pytest.raises(UserError) as e:
        io.save_npy(path, np.zeros(3))
    assert str(path)[:60] in str(e.value) and '\n' not in str(e.value)
    assert file_hashes([tmp_path]) == before


@pytest.mark.parametrize('fails', ['csv', 'rename of the csv'])
def test_a_prediction_that_fails_half_way_leaves_neither_file_new(tmp_path, monkeypatch, fails):
    """The submission and its probabilities go together: the .npy is not renamed into place before the CSV
    is written too, and a failure at any point leaves the files from before (here: none, then an old pair)."""
    import errno

    from utils import io, submission
    ids = ['a', 'b']
    probs = np.full((2, 101, 101), 0.7, np.float16)
    out = tmp_path / 'sub.csv'
    for old in (False, True):
        if old:
            submission.save_prediction(out, ids, probs * 0, 0.5)
        before = file_hashes([tmp_path])
        with monkeypatch.context() as m:
            if fails == 'csv':
                def full(*a, **k):
                    raise OSError(errno.ENOSPC, 'No space left on device')
                m.setattr(submission, 'write_csv_rows', full)
            else:
                real = os.replace

                def replace(src, dst):
                    if str(dst).endswith('.csv'):
                        raise OSError(errno.EIO, 'Input/output error')
                    return real(src, dst)
                m.setattr(io.os, 'replace', replace)
            with pytest.raises(UserError) as e:
                submission.save_prediction(out, ids, probs, 0.5)
        assert str(tmp_path / 'sub.') in str(e.value) and '\n' not in str(e.value)
        assert file_hashes([tmp_path]) == before  # nothing new, no temporary file


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    code = ("import os, signal, sys, time\n"
            "from utils.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'w').write('half')\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'out.csv')], cwd=ROOT, timeout=60)
    assert r.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 4. every value is checked at parse time

@pytest.mark.parametrize('option,value', [('--max_minutes', '-1'), ('--limit', '-5'), ('--seed', '-1'),
                                          ('--max_minutes', 'nan'), ('--fold', '-2'), ('--threads', '-3')])
def test_train_refuses_a_value_out_of_range_before_anything(tmp_path, capsys, option, value):
    from net.training import parse_args
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        parse_args(['--experiment_dir', str(tmp_path / 'exp'), option, value])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and option in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'exp').exists()


def test_recipe_checks_every_stage_before_the_first_one_runs(c, capsys):
    from recipe import main
    exp = c['root'] / 'r'
    refused(main, ['--tta', 'nope', '--data_dir', c['data'], '--experiment_dir', exp], capsys, '--tta', watch=[c['data']])
    for opt, stage in (('--stage1_args', 'stage 1'), ('--stage2_args', 'stage 2')):
        refused(main, ['--preset', 'smoke', '--folds', '0', opt, '--seed -1', '--data_dir', c['data'],
                       '--experiment_dir', exp], capsys, stage, '--seed', watch=[c['data']])
    assert not list(c['root'].glob('r_*'))


def test_train_folds_checks_the_train_options_before_the_first_fold(c, capsys):
    from train_folds import main
    refused(main, ['--folds', '0-1', '--experiment_dir', c['root'] / 'tf', *LITE, '--limit', '-5', '--data_dir', c['data']],
            capsys, 'fold 0', '--limit', watch=[c['data']])
    assert not list(c['root'].glob('tf_*'))


# ---------------------------------------------------------------- 5. hand-edited files

def test_threshold_search_with_an_empty_train_config(c, capsys):
    from optimize_threshold import main
    (c['exp'] / 'train_config.json').write_text('{}')
    refused(main, ['--masks_fn', c['masks']], capsys, 'train_config.json', 'no key', watch=[c['exp'], c['data']])


def test_a_config_value_of_the_wrong_type_names_the_key(c, capsys):
    from optimize_threshold import main
    cfg = c['exp'] / 'train_config.json'
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), 'fold': 'zero'}))
    refused(main, ['--masks_fn', c['masks']], capsys, 'train_config.json', "'fold'", 'zero', watch=[c['exp']])


def test_a_snapshot_without_its_input_transform_names_the_key(c, capsys):
    bad = c['out'] / 'no_val_augs.pth'
    rewrite_snapshot(c['snap'], bad, lambda s: s.pop('val_augs'))
    refused(predict_main, ['--snapshot', bad, '--data_dir', c['data'], '--threads', '1', '--out', c['out'] / 's.csv'],
            capsys, 'no_val_augs.pth', "'val_augs'", watch=[c['out'], c['data']])


# ---------------------------------------------------------------- 6. --resume keeps the run's options

@pytest.mark.parametrize('option,value', [('--lr', '0.5'), ('--loss', 'lovasz'), ('--data_dir', '/nowhere'),
                                          ('--arch', 'unet_plain')])
def test_resume_with_another_option_is_refused_naming_it(c, capsys, option, value):
    argv = ['--experiment_dir', c['exp'], '--resume', '--threads', '1', option, value]
    refused(train_main, argv, capsys, option, '--resume', watch=[c['exp'], c['data']])


def test_resume_accepts_the_run_own_options_and_the_ones_that_may_change(c):
    from net.training import check_resume_options, parse_args
    from utils.checkpoint import read_checkpoint
    from utils.run_folder import Experiment
    exp = Experiment(c['exp'])
    config = read_checkpoint(exp.checkpoint_path)['config']
    config['data_dir'] = str(c['data'])  # the copy's, as its train_config.json says
    config['folds_csv'] = str(c['data'] / 'train_with_folds.csv')
    args = parse_args([*LITE, '--data_dir', str(c['data']), '--experiment_dir', str(c['exp']), '--resume',
                       '--n_epochs', '5', '--max_minutes', '3', '--keep_snapshots', '2'])
    check_resume_options(args, config, exp)  # no error


# ---------------------------------------------------------------- 7. a broken model

@pytest.mark.parametrize('script', ['predict.py', 'predict_tta.py'])
def test_a_snapshot_with_nan_weights_is_refused(c, capsys, script):
    import predict_tta
    nan = c['exp'] / 'snapshots' / 'epoch_9.loss_0.0100.iout_0.990'
    rewrite_snapshot(c['snap'], nan, nan_weights)
    main = predict_main if script == 'predict.py' else predict_tta.main
    refused(main, ['--snapshot', nan, '--data_dir', c['data'], '--threads', '1', '--out', c['out'] / 's.csv'],
            capsys, 'NaN', nan.name, watch=[c['out'], c['data']])
    assert not (c['exp'] / 'predictions').exists()


# ---------------------------------------------------------------- 8. the message names the real problem

def test_an_experiment_dir_that_is_a_file_is_named_so(c, capsys):
    plain = c['root'] / 'plain'
    plain.write_text('not a folder\n')
    line = refused(train_main, [*LITE, '--data_dir', c['data'], '--experiment_dir', plain], capsys,
                   'is a file, not a folder', watch=[plain, c['data']])
    assert '.lock' not in line


def test_a_lock_that_is_a_folder_is_named_so(c, capsys):
    exp = c['root'] / 'lock_is_a_folder'
    (exp / '.lock').mkdir(parents=True)
    refused(train_main, [*LITE, '--data_dir', c['data'], '--experiment_dir', exp], capsys,
            f'{exp / ".lock"} cannot be used as the lock of {exp} (Is a directory)', 'delete it', watch=[exp, c['data']])


@pytest.mark.parametrize('bad', ['1 2.5', '5', 'x 3'])
def test_make_folds_on_a_bad_rle_names_the_id(c, capsys, bad):
    from utils.make_folds import main
    lines = (c['data'] / 'train.csv').read_text().splitlines()
    first = lines[1].split(',')[0]
    lines[1] = f"{first},{bad}"
    (c['data'] / 'train.csv').write_text('\n'.join(lines) + '\n')
    refused(main, ['--p', c['data'] / 'train.csv', '--n', '3'], capsys, 'rle_mask', first, watch=[c['data']])


def test_make_folds_on_a_depth_that_is_no_number(c, capsys):
    from utils.make_folds import main
    lines = (c['data'] / 'depths.csv').read_text().splitlines()
    first = lines[1].split(',')[0]
    lines[1] = f"{first},deep"
    (c['data'] / 'depths.csv').write_text('\n'.join(lines) + '\n')
    refused(main, ['--p', c['data'] / 'train.csv', '--n', '3', '--stratify', 'depth'], capsys,
            'depths.csv', first, 'deep', watch=[c['data']])
