"""Shared fixtures: the repo on sys.path, the real data (required in CI), small data cuts."""
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
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
