"""--seed fixes the folds, the augmentations, the batch order and the initial weights: two CPU runs
with the same seed log the same numbers and end with the same weights."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, stacked_cut
from test_errors import LITE
from utils.snapshots import snapshots_in


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('repro') / 'data', 32, 8)


@pytest.mark.real_data
def test_two_runs_with_one_seed_agree(data, tmp_path):
    from utils.io import load_snapshot
    exps = [tmp_path / 'a', tmp_path / 'b']
    # Run side by side: nothing is shared between them but the read-only data.
    procs = [subprocess.Popen([sys.executable, 'train.py', *LITE, '--n_epochs', '2', '--seed', '3', '--data_dir', str(data),
                               '--experiment_dir', str(e)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for e in exps]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    a, b = (pd.read_csv(e / 'logs' / 'log.csv') for e in exps)
    assert list(a['epoch']) == [1, 2]
    for col in ('train_loss', 'val_loss', 'val_iou', 'val_score', 'lr'):
        assert list(a[col]) == list(b[col]), col
    snaps = [snapshots_in(e / 'snapshots')[-1].path for e in exps]
    wa, wb = (load_snapshot(s)['model'] for s in snaps)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    va, vb = (np.load(s.parent / f'val_masks_{s.name}.npy') for s in snaps)
    assert np.array_equal(va, vb)


@pytest.mark.real_data
def test_seed_fixes_folds(data, tmp_path):
    from utils.make_folds import main as make_folds
    out = {}
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
        make_folds(['--p', str(data / 'train.csv'), '--n', '4', '--seed', str(seed), '--out', str(tmp_path / f'{name}.csv')])
        out[name] = pd.read_csv(tmp_path / f'{name}.csv')['fold'].tolist()
    assert out['a'] == out['b']
    assert out['a'] != out['c']


def test_seed_fixes_batches_and_augmentations():
    """The loader's order and augmentation draws depend on (seed, epoch) only, not on earlier draws."""
    from net.geometry import build_train_aug
    from net.loader import TrainDataset, batches
    from net.runtime import Runtime
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 101, 101), dtype=np.uint8)
    masks = (rng.random((8, 101, 101)) > 0.5).astype(np.uint8)
    ds = TrainDataset(images, masks, build_train_aug('train_128_v1'))
    rt = Runtime(torch.device('cpu'))

    def first_batch(seed, epoch):
        return next(iter(batches(ds, 4, rt, seed, epoch)))[0]

    x = first_batch(5, 2)
    torch.rand(10)  # the global generator must not matter
    np.random.rand(10)
    assert torch.equal(x, first_batch(5, 2))
    assert not torch.equal(x, first_batch(6, 2))
    assert not torch.equal(x, first_batch(5, 3))
