"""Shared fixtures: the real data (required in CI), small data cuts, and the
`slow` / `real_data` markers (`make test-fast` leaves both out)."""
import inspect
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get('SALT_REAL_DATA', ROOT.parent / 'shared' / 'tgs'))


def real_data_or_fail():
    if (REAL / 'train.csv').is_file():
        return REAL
    msg = f"real TGS data not found at {REAL} (set SALT_REAL_DATA)"
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail(msg + "; CI must have it")
    pytest.skip(msg)


@pytest.fixture(scope='session')
def real_dir():
    """The read-only real data folder."""
    return real_data_or_fail()


def cut_real(dst, n_train, n_test, start=0):
    """Copy a slice of the real data (CSV rows and their PNGs) into dst, in the competition's layout."""
    src = real_data_or_fail()
    train = pd.read_csv(src / 'train.csv', dtype=str, keep_default_na=False).iloc[start:start + n_train]
    sub = pd.read_csv(src / 'sample_submission.csv', dtype=str, keep_default_na=False).iloc[:n_test]
    for d in ('train/images', 'train/masks', 'test/images'):
        (dst / d).mkdir(parents=True, exist_ok=True)
    for i in train['id']:
        shutil.copy(src / 'train' / 'images' / f'{i}.png', dst / 'train' / 'images')
        shutil.copy(src / 'train' / 'masks' / f'{i}.png', dst / 'train' / 'masks')
    for i in sub['id']:
        shutil.copy(src / 'test' / 'images' / f'{i}.png', dst / 'test' / 'images')
    train.to_csv(dst / 'train.csv', index=False)
    sub.to_csv(dst / 'sample_submission.csv', index=False)
    shutil.copy(src / 'depths.csv', dst / 'depths.csv')
    return dst


@pytest.fixture
def real_cut(tmp_path):
    """A small writable cut of the real data: 96 train and 24 test images."""
    return cut_real(tmp_path / 'data', 96, 24)


def stacked_cut(dst, n_train, n_test, n_folds=4):
    """A cut of the real data, stacked into arrays and split into folds, by the pipeline's own tools."""
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    d = cut_real(dst, n_train, n_test)
    stack(['--data_dir', str(d), '--workers', '1'])
    make_folds(['--p', str(d / 'train.csv'), '--n', str(n_folds)])
    return d


# ---------------------------------------------------------------- markers
# Marked here, by name, rather than in the test files: a test body can change without its mark.
# `real_data`: set on every test that reads the real data, found from the code (below).
# `slow`: tests that take seconds each (a subprocess that imports torch, a wide_resnet step,
# training); named as 'file.py' (the whole file), 'file.py::test_name' (every parametrization)
# or 'file.py::test_name[param]'. Those without the real data were picked from a
# `pytest -m "not real_data" --durations=60` run; the real-data ones train or start torchrun.
SLOW = {
    # without the real data
    'test_demo.py::test_demo_end_to_end',
    'test_offline.py::test_imports_and_help_open_no_connection',
    'test_models.py::test_train_step[wide_resnet_border]',
    'test_models.py::test_train_step[wide_resnet_hypercolumn]',
    'test_models.py::test_forward_only',
    'test_pipeline.py::test_help_lists_every_name',
    'test_data_tools.py::test_fold_avg_across_chunks_with_min_size_and_saved_mean',
    'test_synthetic.py::test_cli',
    'test_device_aug.py::test_distributions_match_albumentations',
    'test_device_aug.py::test_distribution_check_catches_a_wrong_set',
    'test_loader.py::test_loader_device_refuses_worker_processes',
    # with the real data: whole training runs
    'test_pipeline.py',
    'test_recipe.py',
    'test_distributed.py',
    'test_gpu_check.py',
    'test_resume.py::test_sigkill_then_resume_matches_an_uninterrupted_run',
    'test_train_folds.py::test_a_killed_fold_is_reported_then_resumed_and_the_folds_predict_together',
    'test_train_folds.py::test_folds_side_by_side_with_a_fold_placeholder',
    'test_train_folds.py::test_a_signal_to_train_folds_alone_stops_the_running_fold_cleanly',
}

REAL_DATA_NAMES = {'real_dir', 'real_cut', 'cut_real', 'stacked_cut', 'real_data_or_fail'}
TESTS = Path(__file__).resolve().parent


def _code_names(code):
    """Every global name a code object and the functions nested in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def _reads_real_data(func, seen):
    """Whether func, or a function of the tests that it calls, refers to one of the real-data helpers."""
    func = inspect.unwrap(func)
    code = getattr(func, '__code__', None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _code_names(code)
    if names & REAL_DATA_NAMES:
        return True
    for name in names:
        other = func.__globals__.get(name)
        if inspect.isfunction(other) and Path(other.__code__.co_filename).resolve().parent == TESTS:
            if _reads_real_data(other, seen):
                return True
    return False


def reads_real_data(item):
    """A test reads the real data if it, or one of its fixtures, uses the real-data helpers."""
    if REAL_DATA_NAMES & set(getattr(item, 'fixturenames', ())):
        return True
    seen = set()
    funcs = [item.function] if hasattr(item, 'function') else []
    info = getattr(item, '_fixtureinfo', None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        funcs += [d.func for d in defs]
    return any(_reads_real_data(f, seen) for f in funcs)


def pytest_collection_modifyitems(config, items):
    for item in items:
        file = item.path.name
        if {file, f'{file}::{item.originalname}', f'{file}::{item.name}'} & SLOW:
            item.add_marker(pytest.mark.slow)
        if reads_real_data(item):
            item.add_marker(pytest.mark.real_data)
