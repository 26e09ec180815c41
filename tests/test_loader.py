"""The resident (on-device) batch path: order, sharding, reproducibility, and training through it."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_main
from net.loader import ResidentData, TrainBatches, shard_order
from net.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def test_shard_order_splits_one_permutation_into_whole_batches():
    n, bs, world = 103, 8, 3
    shards = [shard_order(n, bs, seed=1, epoch=4, rank=r, world_size=world) for r in range(world)]
    assert all(len(s) == (n // world // bs) * bs for s in shards)
    flat = torch.cat(shards)
    assert len(set(flat.tolist())) == len(flat)  # disjoint across ranks
    assert torch.equal(shards[1], shard_order(n, bs, seed=1, epoch=4, rank=1, world_size=world))
    assert not torch.equal(shards[0], shard_order(n, bs, seed=1, epoch=5, rank=0, world_size=world))
    single = shard_order(n, bs, seed=1, epoch=4)
    assert len(single) == 96 and len(set(single.tolist())) == 96


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = (rng.random((n, 101, 101)) > 0.5).astype(np.uint8)
    return images, masks


def test_resident_epochs_depend_on_seed_and_epoch_only():
    images, masks = _data()
    rt = Runtime(torch.device('cpu'), loader='device', channels_last=True)
    data = TrainBatches(images, masks, 'train_112_v3', rt)
    assert isinstance(data.resident, ResidentData) and len(data) == 24

    def first(seed, epoch):
        x, t = next(iter(data.epoch(8, seed, epoch)))
        return x, t

    x, t = first(3, 2)
    assert x.shape == (8, 3, 112, 112) and x.is_contiguous(memory_format=torch.channels_last)
    assert t['mask'].shape == (8, 1, 112, 112) and set(t['mask'].unique().tolist()) <= {0.0, 1.0}
    torch.rand(5)
    x2, t2 = first(3, 2)
    assert torch.equal(x, x2) and torch.equal(t['mask'], t2['mask'])
    assert not torch.equal(x, first(4, 2)[0])
    assert not torch.equal(x, first(3, 3)[0])
    assert len(list(data.epoch(8, 3, 2))) == 3


def test_resident_border_targets_move_with_the_mask():
    images, masks = _data(16)
    rt = Runtime(torch.device('cpu'), loader='device')
    data = TrainBatches(images, masks, 'train_128_v3', rt, with_border=True)
    for _, t in data.epoch(8, 0, 1):
        assert set(t) == {'mask', 'border'} and t['border'].shape == (8, 1, 128, 128)


def _train(data, exp, epochs, *extra):
    cmd = [sys.executable, 'train.py', '--arch', 'unet_plain_w8', '--loss', 'BCE', '--optimizer', 'adam_1e-3',
           '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms', 'crop_from_112',
           '--pretrained', 'none', '--batch_size', '8', '--data_dir', str(data), '--experiment_dir', str(exp),
           '--device', 'cpu', '--loader', 'device', '--threads', '1', '--n_epochs', str(epochs), *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.real_data
def test_train_on_the_device_path_resumes_exactly(tmp_path):
    """Two epochs straight vs one epoch then --resume: the same log, to the last digit, on --loader device."""
    from conftest import stacked_cut
    data = stacked_cut(tmp_path / 'data', 40, 8)
    _train(data, tmp_path / 'straight', 2)
    _train(data, tmp_path / 'resumed', 1)
    _train(data, tmp_path / 'resumed', 2, '--resume')
    cols = ['epoch', 'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr']
    a = pd.read_csv(tmp_path / 'straight' / 'logs' / 'log.csv')[cols]
    b = pd.read_csv(tmp_path / 'resumed' / 'logs' / 'log.csv')[cols]
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (tmp_path / 'straight' / 'summary.json').is_file()


def test_loader_device_refuses_worker_processes(tmp_path):
    r = run_main(['train.py', '--experiment_dir', tmp_path / 'e', '--loader', 'device', '--workers', '2',
                  '--data_dir', tmp_path], check=False)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert '--loader device' in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: the epoch must not wait for the device")
@pytest.mark.parametrize('arch,loss', [('unet_plain_w8', 'BCE'), ('unet_plain_ds', 'combined_bce'),
                                       ('unet_plain_ds', 'combined')])
def test_cuda_epoch_never_waits_for_the_device(arch, loss):
    """train_one_epoch on the resident path: any host sync after the first batch raises (sync debug mode)."""
    from net.loop import train_one_epoch
    from net.losses import build_loss
    from net.models import build_model
    images, masks = _data(64)
    rt = Runtime(torch.device('cuda', 0), amp_dtype=torch.bfloat16, channels_last=True, loader='device')
    data = TrainBatches(images, masks, 'train_112_v3', rt)
    model = build_model(arch, pretrained=None).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    class Guarded:
        """Yields the epoch's batches; from the second on, a host sync is an error until close()."""

        def __init__(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return len(self.epoch)

        def __iter__(self):
            for k, batch in enumerate(self.epoch):
                if k == 1:
                    torch.cuda.set_sync_debug_mode('error')
                yield batch

        def close(self):
            torch.cuda.set_sync_debug_mode('default')

    try:
        loss_value, finished = train_one_epoch(model, Guarded(data.epoch(16, 0, 1)), build_loss(loss), opt, rt)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert finished and np.isfinite(loss_value)
