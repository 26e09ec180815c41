"""The training loop's batch prefetcher: same batches in the same order, errors and early stops."""
import threading

import numpy as np
import pytest
import torch

from net.geometry import build_train_aug
from net.loader import Prefetcher, TrainDataset, batches
from net.runtime import setup_runtime


def _dataset(n=40):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = (rng.random((n, 101, 101)) > 0.5).astype(np.uint8)
    return TrainDataset(images, masks, build_train_aug('train_112_v3', seed=1))


def test_prefetched_batches_equal_the_plain_loaders():
    rt = setup_runtime('cpu')
    ds = _dataset()
    fetched = batches(ds, 8, rt, seed=3, epoch=2)
    assert isinstance(fetched, Prefetcher) and len(fetched) == 5
    got = list(fetched)
    # the reference: the loader batches() builds, iterated on this thread after the same reseeding
    from net.augmentations import reseed
    reseed(ds.aug, (3 * 100003 + 2 * 7919) % 2 ** 32)
    gen = torch.Generator().manual_seed(3 * 100003 + 2)
    want = list(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=gen, drop_last=True))
    assert len(got) == len(want) == 5
    for (gi, gt), (wi, wt) in zip(got, want):
        assert gi.dtype == torch.uint8 and gi.shape == (8, 1, 112, 112) and gt.shape == (8, 1, 112, 112)
        assert torch.equal(gi, wi) and torch.equal(gt, wt)


def test_an_error_in_the_thread_reaches_the_consumer():
    def broken():
        yield 1
        raise ValueError('bad image 7')
    it = iter(Prefetcher(broken()))
    assert next(it) == 1
    with pytest.raises(ValueError, match='bad image 7'):
        next(it)


def test_close_stops_a_producer_that_is_ahead():
    made = []

    def endless():
        k = 0
        while True:
            made.append(k)
            yield k
            k += 1
    p = Prefetcher(endless(), depth=2)
    it = iter(p)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    p.close()
    assert not p._thread.is_alive()
    assert len(made) <= 3 + 2 + 1  # never more than `depth` (+ one in hand) ahead
    assert not [t for t in threading.enumerate() if t.name == 'batch-prefetch' and t.is_alive()]


def test_an_abandoned_loader_does_not_shift_the_next_ones_draws():
    # A consumer that stops after one batch leaves a prefetch thread that is still augmenting; the
    # next loader with the same (seed, epoch) must still draw exactly the same augmentations.
    rt = setup_runtime('cpu')
    ds = _dataset(16)
    first = [next(iter(batches(ds, 4, rt, seed=5, epoch=2))) for _ in range(30)]
    for images, targets in first[1:]:
        assert torch.equal(images, first[0][0]) and torch.equal(targets, first[0][1])


def test_a_dropped_prefetcher_stops_its_thread():
    import gc
    import time

    def endless():
        while True:
            yield np.zeros(3)
    it = iter(Prefetcher(endless(), depth=2))
    next(it)
    del it
    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(t.name == 'batch-prefetch' and t.is_alive() for t in threading.enumerate()):
        time.sleep(0.02)
    assert not [t for t in threading.enumerate() if t.name == 'batch-prefetch' and t.is_alive()]
