"""Files that would run code when unpickled are refused unread, by every script that reads them."""
import os
import pickle
import re

import numpy as np
import pytest
import torch

from conftest import ROOT, cut_real
from test_errors import LITE, assert_one_line_error, fake_experiment, run_scripts


class RunsCode:
    """Unpickling this runs `touch MARKER`: what a malicious snapshot or array would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def evil_snapshot(path, marker):
    # Shaped like a real snapshot, so that only the unpickler stands between the file and the code.
    torch.save({'format': 'salt-snapshot-v1', 'arch': 'unet_lite', 'model': RunsCode(marker), 'config': {}}, path)
    return path


def evil_npy(path, marker):
    a = np.empty((2,), dtype=object)
    a[0] = RunsCode(marker)
    np.save(path, a, allow_pickle=True)
    return path


@pytest.fixture(scope='module')
def bait(tmp_path_factory):
    """Malicious files in the places each script reads, and the marker each would create."""
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    tmp = tmp_path_factory.mktemp('security')
    data = cut_real(tmp / 'data', 32, 8)
    stack(['--data_dir', str(data), '--workers', '1'])
    make_folds(['--p', str(data / 'train.csv'), '--n', '4'])
    m = {name: tmp / f'MARKER_{name}' for name in
         ('torch_save', 'pickle2', 'pickle4', 'fold_avg', 'threshold', 'resume', 'init', 'se')}
    exp = tmp / 'exp'
    snap = fake_experiment(exp, data)
    b = {'tmp': tmp, 'data': data, 'markers': m, 'exp': exp}
    b['torch_save'] = evil_snapshot(tmp / 'evil_snapshot', m['torch_save'])
    for protocol in (2, 4):
        with open(tmp / f'evil_pickle{protocol}', 'wb') as f:
            pickle.dump({'format': 'salt-snapshot-v1', 'arch': 'unet_lite', 'model': RunsCode(m[f'pickle{protocol}'])},
                        f, protocol=protocol)
    b['fold_avg'] = evil_npy(tmp / 'evil_probs.npy', m['fold_avg'])
    b['threshold'] = evil_npy(snap.parent / 'val_masks_evil.npy', m['threshold'])
    b['resume'] = tmp / 'exp_evil_ckpt'
    b['resume'].mkdir()
    evil_snapshot(b['resume'] / 'checkpoint.pth', m['resume'])
    b['init'] = evil_snapshot(tmp / 'evil_init', m['init'])
    (exp / 'se' / 'snapshots' / 'cycle_0').mkdir(parents=True)
    evil_snapshot(exp / 'se' / 'snapshots' / 'cycle_0' / 'epoch_1.loss_0.5000.iout_0.500', m['se'])
    return b


@pytest.mark.real_data
def test_malicious_files_are_refused_unrun(bait):
    b, d = bait, bait['data']
    cases = {
        'torch_save': ['predict.py', '--snapshot', b['torch_save'], '--data_dir', d],
        'pickle2': ['predict.py', '--snapshot', b['tmp'] / 'evil_pickle2', '--data_dir', d],
        'pickle4': ['predict_tta.py', '--snapshot', b['tmp'] / 'evil_pickle4', '--data_dir', d],
        'fold_avg': ['predict_fold_avg.py', b['fold_avg'], '--data_dir', d, '--out', b['tmp'] / 'sub.csv'],
        'threshold': ['optimize_threshold.py', '--masks_fn', b['threshold']],
        'resume': ['train.py', *LITE, '--data_dir', d, '--experiment_dir', b['resume'], '--resume'],
        'init': ['train.py', *LITE, '--data_dir', d, '--experiment_dir', b['tmp'] / 'exp_init', '--init', b['init']],
        'se': ['predict_se.py', '--snapshot_dir', b['exp'] / 'se', '--data_dir', d],
    }
    results = run_scripts([{'argv': argv, 'watch': [b['tmp']]} for argv in cases.values()])
    for (name, argv), r in zip(cases.items(), results):
        line = assert_one_line_error(r, ['refused'], argv[0])
        assert 'could run code' in line, line
        assert not b['markers'][name].exists(), f"{name}: the file's code ran"
        assert r['after'] == r['before'], f"{name} changed files"
    assert not (b['tmp'] / 'sub.csv').exists()


@pytest.mark.real_data
def test_loaders_refuse_in_process(bait):
    from utils.errors import UserError
    from utils.io import load_npy, load_snapshot
    with pytest.raises(UserError, match='refused'):
        load_snapshot(bait['torch_save'])
    for mmap in (False, True):
        with pytest.raises(UserError, match='refused'):
            load_npy(bait['fold_avg'], 'masks', 'predict.py', mmap=mmap)
    assert not any(m.exists() for m in bait['markers'].values())


def test_every_loader_in_the_code_is_safe():
    """No torch.load without weights_only=True, no np.load without allow_pickle=False, no pickle.load."""
    sources = [p for p in ROOT.rglob('*.py') if not {'.venv', '.device', 'tests'} & set(p.relative_to(ROOT).parts)]
    unsafe = []
    for p in sources:
        for k, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split('#')[0]
            if re.search(r'torch\.load\(', code) and 'weights_only=True' not in code:
                unsafe.append(f'{p.relative_to(ROOT)}:{k}: {line.strip()}')
            if re.search(r'\bnp\.load\(', code) and 'allow_pickle=False' not in code:
                unsafe.append(f'{p.relative_to(ROOT)}:{k}: {line.strip()}')
            if re.search(r'\bpickle\.loads?\(|allow_pickle=True|weights_only=False', code):
                unsafe.append(f'{p.relative_to(ROOT)}:{k}: {line.strip()}')
    assert not unsafe, '\n'.join(unsafe)
