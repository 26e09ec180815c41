"""torchrun on the CPU (gloo): two processes train one fold as one run, and only rank 0 writes.

One torchrun run of unet_lite on a stacked, folded cut of the real data (the same cut as the
``real_cut`` fixture, made once for the module so that both tests share the run). Every file
put in place by ``utils.io`` goes through ``os.replace``; a ``sitecustomize`` on PYTHONPATH logs
each of those calls with the writer's RANK, so the tests see who wrote what and how often.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, cut_real
from utils.snapshots import snapshots_in

EPOCHS = 2
LOSS = 'bce_lovasz'  # two terms: the TensorBoard terms are summed over the ranks like the loss
LIMIT = 64
N_PROC = 2

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

SPY = '''\
import os
_replace = os.replace


def _logged_replace(src, dst, *args, **kwargs):
    out = _replace(src, dst, *args, **kwargs)
    log = os.environ.get('SALT_WRITE_LOG')
    if log and 'RANK' in os.environ:
        with open(log, 'a') as f:
            f.write(os.environ['RANK'] + '\\t' + os.fspath(dst) + '\\n')
    return out


os.replace = _logged_replace
'''


def run(args, timeout=120, env=None):
    r = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{' '.join(map(str, args[:3]))} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """(data dir, experiment dir, torchrun's stdout, [(rank, path) of every file put in place])."""
    root = tmp_path_factory.mktemp('ddp')
    data = cut_real(root / 'data', 96, 24)
    run([sys.executable, 'utils/stack_and_save.py', '--data_dir', data])
    run([sys.executable, 'utils/make_folds.py', '--p', data / 'train.csv', '--n', '5'])
    spy = root / 'spy'
    spy.mkdir()
    (spy / 'sitecustomize.py').write_text(SPY)
    log = root / 'writes.tsv'
    env = dict(os.environ, SALT_WRITE_LOG=str(log), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(spy)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    exp = root / 'exp'
    torchrun = Path(sys.executable).with_name('torchrun')
    r = run([torchrun, f'--nproc_per_node={N_PROC}', '--standalone', 'train.py', '--arch', 'unet_lite',
             '--loss', LOSS, '--tensorboard', '--pretrained', 'none', '--n_epochs', EPOCHS, '--batch_size', 8, '--limit', LIMIT,
             '--fold', 0, '--data_dir', data, '--experiment_dir', exp, '--device', 'cpu'], timeout=180, env=env)
    writes = [tuple(line.split('\t', 1)) for line in log.read_text().splitlines()] if log.exists() else []
    return data, exp, r.stdout, [(rank, Path(p).resolve()) for rank, p in writes]


def fold_val(data):
    """Validation rows of fold 0 as train.py --limit LIMIT uses them."""
    from utils.data import fold_indices
    _, va = fold_indices(data, data / 'train_with_folds.csv', 0)
    return va[:max(1, LIMIT // 4)]


def snapshot_files(exp):
    return [s.path for s in snapshots_in(exp / 'snapshots')]


def test_torchrun_trains_one_run_and_only_rank0_writes(ddp_run):
    data, exp, stdout, writes = ddp_run
    n_val = len(fold_val(data))

    files = sorted(p.relative_to(exp).as_posix() for p in exp.rglob('*') if p.is_file())
    assert not [f for f in files if '.tmp' in f], f"temporary files left behind: {files}"
    snaps = snapshot_files(exp)
    expected = {'train_config.json', 'logs/log.csv', 'checkpoint.pth', 'logs/learning_curve.png', 'logs/val_examples.png',
                'summary.json'}
    expected |= {f'snapshots/{s.name}' for s in snaps} | {f'snapshots/val_masks_{s.name}.npy' for s in snaps}
    events = [f for f in files if f.startswith('tensorboard/events.out.tfevents.')]
    assert len(events) == 1, f"one TensorBoard event file expected (rank 0's): {events}"
    expected |= set(events)
    assert set(files) == expected, f"unexpected files: {sorted(set(files) ^ expected)}"

    log = pd.read_csv(exp / 'logs' / 'log.csv')
    assert list(log['epoch']) == list(range(1, EPOCHS + 1))
    assert np.isfinite(log[['train_loss', 'val_loss', 'val_iou', 'val_score']].to_numpy()).all()
    # The loss terms, summed over both ranks like the loss: bce + lovasz is the train loss.
    from test_plots import _events
    ev = _events(exp / 'tensorboard')
    terms = [np.array([v for _, v in ev[f'loss_terms/{k}']]) for k in ('bce', 'lovasz')]
    assert [s for s, _ in ev['loss_terms/bce']] == list(range(1, EPOCHS + 1))
    assert np.allclose(terms[0] + terms[1], log['train_loss'], rtol=1e-4)

    assert snaps, "no snapshot written"
    import torch
    for s in snaps:
        snap = torch.load(s, map_location='cpu', weights_only=True)
        assert snap['arch'] == 'unet_lite' and snap['fold'] == 0
        assert not any(k.startswith('module.') for k in snap['model']), "snapshot keeps DDP's 'module.' prefix"
        masks = np.load(s.parent / f'val_masks_{s.name}.npy')
        assert masks.shape == (n_val, 101, 101), "val masks must cover the full validation set, not one rank's shard"
        assert np.isfinite(masks).all() and masks.min() >= 0 and masks.max() <= 1

    config = json.loads((exp / 'train_config.json').read_text())
    assert config['arch'] == 'unet_lite' and config['n_epochs'] == EPOCHS and config['limit'] == LIMIT

    # Who wrote what: rank 0 only; the config once, the log and the checkpoint once per epoch.
    mine = [(rank, p) for rank, p in writes if exp.resolve() in p.parents]
    assert mine, "the write spy saw nothing (sitecustomize not loaded?)"
    assert {rank for rank, _ in mine} == {'0'}, f"rank != 0 wrote: {[w for w in mine if w[0] != '0']}"
    count = {}
    for _, p in mine:
        count[p] = count.get(p, 0) + 1
    assert count.get((exp / 'train_config.json').resolve()) == 1
    assert count.get((exp / 'logs' / 'log.csv').resolve()) == EPOCHS
    assert count.get((exp / 'checkpoint.pth').resolve()) == EPOCHS
    assert all(count.get(s.resolve()) == 1 for s in snaps)

    # Console: one banner and one summary, from rank 0.
    assert stdout.count(f'{N_PROC} processes') == 1
    assert stdout.count('epochs in') == 1


def test_distributed_validation_matches_the_saved_snapshot(ddp_run):
    """Every rank's shard of the val masks, and the logged val loss, come from the snapshot's own weights.

    Re-predicting the validation images in one process from the saved snapshot must give the
    gathered val masks (to float16 rounding) and the logged val loss.
    """
    import torch

    from net.inference import predict_probs
    from net.runtime import setup_runtime
    from net.inference import model_from_snapshot, transforms_for
    from net.losses import build_loss
    from net.tta import TTAS
    from utils.data import load_train_arrays

    data, exp, _, _ = ddp_run
    va = fold_val(data)
    images, masks = load_train_arrays(data)
    rt = setup_runtime('cpu', 'off', 'off', 0, 0)
    log = pd.read_csv(exp / 'logs' / 'log.csv').set_index('epoch')
    for s in snapshot_files(exp):
        model, snap = model_from_snapshot(s, rt)
        val_aug, back = transforms_for(snap)
        with torch.no_grad():
            probs, loss = predict_probs(model, images[va], val_aug, back, TTAS['null'], rt, 64, out_dtype=np.float32,
                                        targets=masks[va][:, None], loss_fn=build_loss(LOSS))
        saved = np.load(s.parent / f'val_masks_{s.name}.npy').astype(np.float32)
        err = np.abs(probs['mask'] - saved).reshape(len(va), -1).max(1)
        # float16 storage rounds values near 0.5 by up to 2.44e-4
        bad = np.flatnonzero(err > 3e-4)
        assert not len(bad), (f"{s.name}: val masks of images {bad.tolist()} (rank {sorted(set((bad % 2).tolist()))}'s "
                              f"shard) differ from the snapshot's prediction by up to {err.max():.2e}")
        assert abs(log.loc[snap['epoch'], 'val_loss'] - loss) < 1e-4
