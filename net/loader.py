"""Training batches: resident on the device, or prepared image by image on a background thread.

Both paths yield (x, targets) ready for the model: x normalized float (B, 3, S, S) on the
device (channels-last when the runtime says so), targets {'mask': (B, 1, S, S), 'border': ...}
float on the device. The order of images and every random draw depend on (seed, epoch, rank)
only, so runs are reproducible and --resume continues exactly.
"""
import atexit
import copy
import queue
import threading
import weakref

import numpy as np
import torch

from net.augmentations import reseed
from net.device_aug import build_device_aug
from net.geometry import build_train_aug, preset
from utils.data import targets_of

SEED_STRIDE = 100003


class TrainDataset:
    """Indexable training set: yields (image uint8 (1,S,S), targets uint8 (K,S,S)) after augmentation.

    targets' first channel is the mask; with `with_border`, the second is the mask's border,
    computed on the 101x101 mask before augmentation so that it moves with the image.
    """

    def __init__(self, images, masks, aug, with_border=False):
        self.images, self.masks, self.aug = images, masks, aug
        self.borders = None
        if with_border:
            self.borders = targets_of(masks, with_border=True)[:, 1]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = np.asarray(self.images[i])
        mask = np.asarray(self.masks[i])
        if self.borders is None:
            out = self.aug(image=image, mask=mask)
            target = out['mask'][None]
        else:
            out = self.aug(image=image, masks=[mask, self.borders[i]])
            target = np.stack(out['masks'])
        return torch.from_numpy(np.ascontiguousarray(out['image'][None])), torch.from_numpy(np.ascontiguousarray(target))


def epoch_seed(seed, epoch, rank=0):
    """One integer seed per (run seed, epoch, rank); the same formula on every path."""
    return (seed * SEED_STRIDE + epoch * 7919 + rank) % 2 ** 63


def to_input(images, rt):
    """uint8 images (N, 1, S, S) -> normalized float (N, 3, S, S) on the runtime's device."""
    x = images.to(rt.device, non_blocking=True).float()
    scale, shift = rt.normalizer()
    x = x * scale + shift  # broadcasts the single channel to three
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def float_input(images01, rt):
    """float images in [0, 1] (N, 1, S, S), already on the device -> normalized (N, 3, S, S)."""
    scale, shift = rt.normalizer()
    x = images01 * (scale * 255.0) + shift
    return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x


def targets_from(t):
    """Target channels (N, K, S, S) {0,1} -> the loss's dict: mask, and border when K == 2."""
    t = t.float()
    out = {'mask': t[:, :1]}
    if t.shape[1] > 1:
        out['border'] = t[:, 1:2]
    return out


def shard_order(n, batch_size, seed, epoch, rank=0, world_size=1):
    """This rank's image order for one epoch: (n_batches * batch_size,) int64, a whole number of batches.

    One permutation per (seed, epoch), drawn on the CPU so that every device and rank sees the same
    one; each rank takes every world_size-th image of it, and the tail that does not fill a batch
    on every rank is dropped (as DataLoader's drop_last).
    """
    gen = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
    perm = torch.randperm(n, generator=gen)
    per_rank = n // world_size
    mine = perm[rank:per_rank * world_size:world_size]
    return mine[:(per_rank // batch_size) * batch_size]


class ResidentData:
    """The training fold kept on the device as uint8, augmented batch by batch there.

    images (N, 101, 101) uint8; targets (N, K, 101, 101) uint8 in {0,1} (mask, and border when K=2);
    aug: a net.device_aug.DeviceAug. 2560 images take 26 MB per channel; nothing crosses to
    the host between epochs. weights: None, or a per-image loss weight (N,), given to the loss as
    targets['weight'] (B,) float32 (the --small_crops samples weigh less than real images).
    """

    def __init__(self, images, targets, aug, rt, weights=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(rt.device)[:, None]
        self.targets = torch.from_numpy(np.ascontiguousarray(targets)).to(rt.device)
        self.weights = None
        if weights is not None:
            if len(weights) != len(images):
                raise ValueError(f"{len(weights)} weights for {len(images)} images")
            self.weights = torch.as_tensor(np.asarray(weights, np.float32)).to(rt.device)
        self.aug, self.rt = aug, rt

    def __len__(self):
        return len(self.images)

    def epoch(self, batch_size, seed, epoch):
        """An iterable over one epoch's batches (x, targets dict), all on the device."""
        return ResidentEpoch(self, batch_size, seed, epoch)


class ResidentEpoch:
    def __init__(self, data, batch_size, seed, epoch):
        rt = data.rt
        self.data, self.batch_size = data, batch_size
        self.order = shard_order(len(data), batch_size, seed, epoch, rt.rank, rt.world_size).to(rt.device)
        self.gen = torch.Generator(rt.device).manual_seed(epoch_seed(seed, epoch, rt.rank))

    def __len__(self):
        return len(self.order) // self.batch_size

    def __iter__(self):
        d, rt = self.data, self.data.rt
        for idx in self.order.split(self.batch_size):
            x01, t = d.aug(d.images[idx], d.targets[idx], self.gen)
            targets = targets_from(t)
            if d.weights is not None:
                targets['weight'] = d.weights[idx]
            yield float_input(x01, rt), targets

    def close(self):
        pass


class Prefetcher:
    """Iterates `loader` in a background thread, up to `depth` batches ahead of the consumer.

    With no loader worker processes (the CPU default) augmentation and collation would run on the
    main thread between training steps, while the compute threads wait; here they overlap with
    the step before. The order of batches and of random draws is the loader's own, so runs stay
    reproducible. An exception in the thread is raised in the consumer; `close` stops the thread
    early (a time budget ending mid-epoch).
    """

    _END = object()
    _live = weakref.WeakSet()

    def __init__(self, loader, depth=2):
        self.loader = loader
        self._queue = queue.Queue(depth)
        self._stop = threading.Event()
        # The thread holds the queue and the event, not `self`: a prefetcher dropped by its consumer
        # is collected, and its __del__ stops the thread.
        self._thread = threading.Thread(target=self._fill, args=(loader, self._queue, self._stop),
                                        name='batch-prefetch', daemon=True)
        self._thread.start()
        Prefetcher._live.add(self)

    def __len__(self):
        return len(self.loader)

    @staticmethod
    def _put(q, stop, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    @staticmethod
    def _fill(loader, q, stop):
        put = Prefetcher._put
        try:
            for item in loader:
                if not put(q, stop, item):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            put(q, stop, e)
            return
        put(q, stop, Prefetcher._END)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join()

    def __del__(self):
        self._stop.set()

    @classmethod
    def close_all(cls):
        """Stops every live prefetch thread (at exit: a thread still in torch code then aborts Python)."""
        for p in list(cls._live):
            p.close()


atexit.register(Prefetcher.close_all)


def batches(dataset, batch_size, rt, seed, epoch):
    """A DataLoader over `dataset` whose order and augmentation draws depend only on (seed, epoch).

    Yields the dataset's uint8 (images, targets) on the host. Without worker processes it comes
    wrapped in a :class:`Prefetcher`.
    """
    gen = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
    sampler = None
    if rt.distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank,
                                                      shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    if rt.workers == 0 and getattr(dataset, 'aug', None) is not None:
        # Each loader draws from its own seeded copy of the augmentations: a prefetch thread of an
        # earlier loader that is still running must not draw from (and shift) this one's generator.
        dataset = copy.copy(dataset)
        dataset.aug = reseed(copy.deepcopy(dataset.aug), epoch_seed(seed, epoch, rt.rank) % 2 ** 32)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=gen,
        num_workers=rt.workers, pin_memory=rt.cuda, drop_last=True,
        worker_init_fn=_seed_worker if rt.workers else None, persistent_workers=False,
        collate_fn=None if rt.workers else _stack_numpy)
    return Prefetcher(loader) if rt.workers == 0 else loader


class HostEpoch:
    """One epoch of the per-image path, converted to device inputs as batches arrive."""

    def __init__(self, dataset, batch_size, rt, seed, epoch):
        self.loader, self.rt = batches(dataset, batch_size, rt, seed, epoch), rt

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, targets, *weight in self.loader:
            t = targets_from(targets.to(self.rt.device, non_blocking=True))
            if weight:
                t['weight'] = weight[0].to(self.rt.device, non_blocking=True).float()
            yield to_input(images, self.rt), t

    def close(self):
        if isinstance(self.loader, Prefetcher):
            self.loader.close()


def _stack_numpy(items):
    # Collates in numpy: torch.stack on the prefetch thread would start a second OpenMP team
    # beside the training threads' one, and the two would fight over the cores.
    return tuple(torch.from_numpy(np.stack([t.numpy() for t in column])) for column in zip(*items))


def _seed_worker(worker_id):
    # Each worker's torch seed derives from the loader's seeded generator, so this is reproducible.
    info = torch.utils.data.get_worker_info()
    if getattr(info.dataset, 'aug', None) is not None:
        reseed(info.dataset.aug, torch.initial_seed() % 2 ** 32)


class WeightedTrainDataset(TrainDataset):
    """TrainDataset whose items also carry the image's loss weight: (image, targets, weight () float32)."""

    def __init__(self, images, masks, aug, weights, with_border=False):
        super().__init__(images, masks, aug, with_border=with_border)
        if len(weights) != len(images):
            raise ValueError(f"{len(weights)} weights for {len(images)} images")
        self.weights = np.asarray(weights, np.float32)

    def __getitem__(self, i):
        image, target = super().__getitem__(i)
        return image, target, torch.tensor(self.weights[i])


class TrainBatches:
    """The training fold and how its batches are made: `epoch(batch_size, seed, epoch)` gives one epoch.

    rt.loader 'device': a :class:`ResidentData` with the batched twin of preset `train_augs` (net.geometry);
    'prefetch': TrainDataset with the albumentations set, on a background thread.
    weights: None, or a loss weight per image (N,), which each batch's targets then carry as 'weight'.
    """

    def __init__(self, images, masks, train_augs, rt, with_border=False, weights=None):
        self.rt = rt
        if rt.loader == 'device':
            device_aug = build_device_aug(preset(train_augs).device)
            self.resident = ResidentData(images, targets_of(masks, with_border), device_aug, rt, weights)
            self.dataset = None
        else:
            aug = build_train_aug(train_augs)
            self.dataset = (TrainDataset(images, masks, aug, with_border=with_border) if weights is None
                            else WeightedTrainDataset(images, masks, aug, weights, with_border=with_border))
            self.resident = None

    def __len__(self):
        return len(self.resident) if self.resident is not None else len(self.dataset)

    def epoch(self, batch_size, seed, epoch):
        if self.resident is not None:
            return self.resident.epoch(batch_size, seed, epoch)
        return HostEpoch(self.dataset, batch_size, self.rt, seed, epoch)
