"""The learning rate is one function of progress (net.optim.lr_at), equal to the torch scheduler
objects that earlier versions stepped, and their checkpoints still resume."""
import functools
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT, stacked_cut
from net.optim import BY_TIME, SCHEDULERS, lr_at
from test_errors import LITE
from utils.snapshots import snapshots_of


# ---------------------------------------------------------------- the reference: the previous version's schedules

def _old_step(step_size, gamma, optimizer, epochs):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def _old_cosine(optimizer, epochs):
    base = optimizer.param_groups[0]['lr']
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=base * 0.01)


def _old_constant(optimizer, epochs):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


OLD_SCHEDULERS = {
    'step_50_01': functools.partial(_old_step, 50, 0.1),
    'step_50_05': functools.partial(_old_step, 50, 0.5),
    'step_20_05': functools.partial(_old_step, 20, 0.5),
    'step_100_07': functools.partial(_old_step, 100, 0.7),
    'cosine': _old_cosine,
    'none': _old_constant,
}


def old_cosine_time_factor(fraction, floor=0.01):
    fraction = min(max(fraction, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction))


def old_rates(name, base_lr, n_epochs, cycles):
    """The lr of every epoch as the previous fit set it: a scheduler object rebuilt at each cycle on a
    reset optimizer, stepped after each epoch."""
    per_cycle = math.ceil(n_epochs / cycles)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    rates, scheduler = [], None
    for epoch in range(1, n_epochs + 1):
        if (epoch - 1) % per_cycle == 0:
            for g in optimizer.param_groups:
                g['lr'] = base_lr
            scheduler = OLD_SCHEDULERS[name](optimizer, per_cycle)
        rates.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    return rates


def new_rates(name, base_lr, n_epochs, cycles):
    per_cycle = math.ceil(n_epochs / cycles)
    return [lr_at(name, base_lr, (epoch - 1) % per_cycle, per_cycle) for epoch in range(1, n_epochs + 1)]


def test_every_scheduler_is_covered():
    assert set(OLD_SCHEDULERS) == set(SCHEDULERS)


@pytest.mark.parametrize('name', sorted(SCHEDULERS))
@pytest.mark.parametrize('n_epochs, cycles', [(1, 1), (5, 1), (7, 3), (200, 1), (250, 2), (203, 4), (60, 60)])
def test_epoch_schedules_equal_the_torch_schedulers(name, n_epochs, cycles):
    for base_lr in (1e-4, 1e-3, 3.7e-2):
        want = old_rates(name, base_lr, n_epochs, cycles)
        got = new_rates(name, base_lr, n_epochs, cycles)
        assert got == want, (base_lr, next(i for i, (a, b) in enumerate(zip(got, want)) if a != b))


def test_schedules_change_where_they_should():
    # Not constant by accident: the step schedules step at their boundary, cosine falls to 1%.
    assert lr_at('step_50_01', 1.0, 49, 200) == 1.0 and lr_at('step_50_01', 1.0, 50, 200) == pytest.approx(0.1)
    assert lr_at('step_100_07', 1.0, 250, 300) == pytest.approx(0.49)
    assert lr_at('cosine', 1.0, 0, 10) == 1.0
    assert lr_at('cosine', 1.0, 5, 10) == pytest.approx(0.505)
    assert lr_at('cosine', 1.0, 10, 10) == pytest.approx(0.01)
    assert lr_at('none', 2e-3, 99, 100) == 2e-3


def test_time_schedule_equals_the_time_cosine():
    for share in (-0.5, 0.0, 0.1, 0.25, 0.5, 0.73, 0.999, 1.0, 1.7):
        assert lr_at(BY_TIME, 1e-3, share) == 1e-3 * old_cosine_time_factor(share)
    assert lr_at(BY_TIME, 1e-3, 0.0) == 1e-3 and lr_at(BY_TIME, 1e-3, 1.0) == pytest.approx(1e-5)


def test_unknown_schedule_is_a_user_error():
    from utils.errors import UserError
    with pytest.raises(UserError, match='choose one of'):
        lr_at('nope', 1e-3, 0, 10)


# ---------------------------------------------------------------- checkpoints of the previous version

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('schedule') / 'data', 32, 8)


def _start(data, exp, *extra):
    return subprocess.Popen([sys.executable, 'train.py', *LITE, '--seed', '5', '--data_dir', str(data),
                             '--experiment_dir', str(exp), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.real_data
def test_a_checkpoint_with_scheduler_state_resumes(data, tmp_path):
    """A checkpoint as the previous version wrote it (a 'scheduler' entry, 'initial_lr' in the optimizer's
    groups) resumes, and the resumed run is the uninterrupted one, number for number."""
    from utils.io import load_snapshot
    whole, old = tmp_path / 'whole', tmp_path / 'old'
    reference = _start(data, whole, '--n_epochs', '3')  # runs alongside: the two share nothing
    _finish(_start(data, old, '--n_epochs', '2'))
    path = old / 'checkpoint.pth'
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert 'scheduler' not in ckpt
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=ckpt['base_lrs'][0])
    scheduler = OLD_SCHEDULERS['step_50_05'](optimizer, 3)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    ckpt['scheduler'] = scheduler.state_dict()
    for g in ckpt['optimizer']['param_groups']:
        g['initial_lr'] = ckpt['base_lrs'][0]
    torch.save(ckpt, path)

    _finish(_start(data, old, '--resume', '--n_epochs', '3'))
    _finish(reference)
    log, ref = pd.read_csv(old / 'logs' / 'log.csv'), pd.read_csv(whole / 'logs' / 'log.csv')
    assert list(log['epoch']) == [1, 2, 3]
    for col in ('train_loss', 'val_loss', 'val_iou', 'val_score', 'lr'):
        assert list(log[col]) == list(ref[col]), col
    assert 'scheduler' not in torch.load(path, map_location='cpu', weights_only=True)
    snaps = [snapshots_of(e)[-1].path for e in (old, whole)]
    a, b = (load_snapshot(s)['model'] for s in snaps)
    assert all(torch.equal(a[k], b[k]) for k in b)


# A run's options as train.py saves them (the keys --resume needs).
RUN = {'arch': 'unet_lite', 'loss': 'BCE', 'optimizer': 'adam_1e-3', 'scheduler': 'cosine', 'train_augs': 'train_128_v3',
       'val_augs': 'val_128', 'val_transforms': 'crop_from_128', 'batch_size': 16, 'n_epochs': 10, 'cycles': 1,
       'fold': 0, 'seed': 42, 'limit': 0, 'border': False, 'data_dir': 'data', 'folds_csv': 'data/train_with_folds.csv'}


def test_checkpoint_contents_are_checked(tmp_path):
    from utils.checkpoint import CHECKPOINT_KEYS, checkpoint_state, read_checkpoint
    from utils.errors import UserError
    state = checkpoint_state({'w': torch.ones(2)}, {'state': {}, 'param_groups': []}, None, 3, 0, [], {}, [1e-3],
                             {'torch': torch.get_rng_state(), 'cuda': []}, 12.5, RUN)
    assert set(CHECKPOINT_KEYS) <= set(state) and state['scaler'] == {} and state['swa'] is None
    torch.save(state, tmp_path / 'good.pth')
    back = read_checkpoint(tmp_path / 'good.pth')
    assert back['epoch'] == 3 and torch.equal(back['model']['w'], torch.ones(2))
    torch.save({k: v for k, v in state.items() if k != 'rng'}, tmp_path / 'partial.pth')
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    for name in ('partial.pth', 'text.pth'):
        with pytest.raises(UserError, match='--overwrite') as e:
            read_checkpoint(tmp_path / name)
        assert name in str(e.value) and '\n' not in str(e.value)
