"""The one training loop and the one predictor that every script uses.

Nothing here parses arguments or knows file names: the scripts pass in the model, loss, data
and a `Runtime` (device, precision, distributed rank), so train.py and train_border.py differ
only in the targets and loss they hand to `fit`.
"""
import atexit
import math
import os
import queue
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.errors import UserError

# ImageNet statistics: the gray image is repeated into three channels so that encoders
# pretrained on RGB see inputs on the scale they were trained with.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class Runtime:
    """Where and how tensors are computed, resolved once from the command line."""
    device: torch.device
    amp_dtype: torch.dtype = None  # None: full precision
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    scale_shift: tuple = field(default=None, repr=False)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def normalizer(self):
        if self.scale_shift is None:
            scale = (1.0 / (255.0 * STD)).to(self.device)
            shift = (-MEAN / STD).to(self.device)
            self.scale_shift = (scale, shift)
        return self.scale_shift


def setup_runtime(device='auto', amp='auto', channels_last='auto', workers=-1, threads=0):
    """Resolve device options; joins the process group when started by torchrun."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; pass --device auto, cpu, cuda or cuda:N") from None
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no CUDA GPU is visible; pass --device cpu or auto")
        if world > 1 and dev.index is None:
            dev = torch.device('cuda', local_rank)
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    elif dev.type != 'cpu':
        raise UserError(f"device {device!r} is not supported; pass --device auto, cpu, cuda or cuda:N")
    if threads > 0:
        torch.set_num_threads(threads)
    elif world > 1 and dev.type == 'cpu':
        # Processes on one machine share its cores; oversubscription slows every rank.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if amp == 'auto':
        amp_dtype = None
        if dev.type == 'cuda':
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif amp == 'off':
        amp_dtype = None
    else:
        amp_dtype = torch.bfloat16 if amp == 'bf16' else torch.float16
        if dev.type == 'cpu' and amp_dtype == torch.bfloat16 and not cpu_has_native_bf16():
            print("warning: --amp bf16 on a CPU without native bfloat16 (AVX-512 BF16 / AMX) is emulated and "
                  "slower than fp32; drop --amp or pass --amp off", file=sys.stderr)
    if channels_last == 'auto':
        # NHWC is faster on both: tensor cores on CUDA, oneDNN's blocked kernels on CPU (measured
        # 1.1-1.9x for every architecture here, same predictions; benchmarks/results.md)
        channels_last = True
    else:
        channels_last = channels_last == 'on'
    if workers < 0:
        workers = 4 if dev.type == 'cuda' else 0
    if world > 1 and not torch.distributed.is_initialized():
        backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend=backend)
    return Runtime(dev, amp_dtype, bool(channels_last), rank, world, workers)


def cpu_has_native_bf16():
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX-512 BF16 / AMX), so that --amp bf16 pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


def unwrap(model):
    """The plain model inside a DDP or compiled wrapper (whose state_dict keys are the plain ones)."""
    model = getattr(model, 'module', model)
    return getattr(model, '_orig_mod', model)


@torch.no_grad()
def predict_probs(model, images, val_aug, back, tta, rt, batch_size=64, keys=('mask',), out_dtype=np.float16,
                  desc=None, targets=None, loss_fn=None):
    """Probabilities at 101x101 for uint8 images (N, 101, 101), averaged over the TTA views.

    val_aug maps (B, C, 101, 101) to the model's input size and back maps outputs to 101x101;
    tta is a list of (forward, inverse) pairs applied around the model. With `targets`
    ((N, K, 101, 101) uint8) and `loss_fn`, also returns the mean loss of the plain view.
    Returns ({key: array (N, 101, 101) out_dtype}, mean loss or None).
    """
    model.eval()
    n = len(images)
    out = {k: np.empty((n, 101, 101), out_dtype) for k in keys}
    loss_sum, seen = 0.0, 0
    bar = tqdm(total=n, desc=desc, unit='img', leave=False, disable=desc is None or not rt.is_main, mininterval=0.5)
    for a in range(0, n, batch_size):
        # np.array copies: test arrays are read-only memory maps, which torch will not wrap.
        batch = torch.from_numpy(np.array(images[a:a + batch_size])).to(rt.device, non_blocking=True)
        x01 = val_aug(batch[:, None].float() / 255.0)
        x = float_input(x01, rt)
        acc = {k: None for k in keys}
        for view, (fwd, inv) in enumerate(tta):
            with rt.autocast():
                o = model(fwd(x))
            if view == 0 and loss_fn is not None:
                t = torch.from_numpy(np.ascontiguousarray(targets[a:a + batch_size])).to(rt.device).float()
                t = (val_aug(t) > 0.5).float()
                loss_sum += float(loss_fn(o, targets_from(t))) * len(batch)
                seen += len(batch)
            for k in keys:
                p = inv(torch.sigmoid(o[k].float()))
                acc[k] = p if acc[k] is None else acc[k] + p
        for k in keys:
            out[k][a:a + len(batch)] = back(acc[k] / len(tta))[:, 0].cpu().numpy().astype(out_dtype)
        bar.update(len(batch))
    bar.close()
    return out, (loss_sum / seen if seen else None)


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

    Without worker processes it comes wrapped in a :class:`Prefetcher`.
    """
    gen = torch.Generator().manual_seed(seed * 100003 + epoch)
    sampler = None
    if rt.distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank,
                                                      shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    if rt.workers == 0 and getattr(dataset, 'aug', None) is not None:
        # Each loader draws from its own seeded copy of the augmentations: a prefetch thread of an
        # earlier loader that is still running must not draw from (and shift) this one's generator.
        import copy
        from net.augmentations import reseed
        dataset = copy.copy(dataset)
        dataset.aug = reseed(copy.deepcopy(dataset.aug), (seed * 100003 + epoch * 7919 + rt.rank) % 2 ** 32)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=gen,
        num_workers=rt.workers, pin_memory=rt.device.type == 'cuda', drop_last=True,
        worker_init_fn=_seed_worker if rt.workers else None, persistent_workers=False,
        collate_fn=None if rt.workers else _stack_numpy)
    return Prefetcher(loader) if rt.workers == 0 else loader


def _stack_numpy(items):
    # Collates in numpy: torch.stack on the prefetch thread would start a second OpenMP team
    # beside the training threads' one, and the two would fight over the cores.
    return tuple(torch.from_numpy(np.stack([t.numpy() for t in column])) for column in zip(*items))


def _seed_worker(worker_id):
    # Each worker's torch seed derives from the loader's seeded generator, so this is reproducible.
    from net.augmentations import reseed
    info = torch.utils.data.get_worker_info()
    if getattr(info.dataset, 'aug', None) is not None:
        reseed(info.dataset.aug, torch.initial_seed() % 2 ** 32)


def train_one_epoch(model, loader, loss_fn, optimizer, rt, scaler=None, deadline=None, desc=None):
    """One pass over `loader`; returns (mean loss, finished) — finished is False when `deadline` cut it short."""
    model.train()
    total, count = torch.zeros((), device=rt.device), 0
    finished = True
    bar = tqdm(loader, desc=desc, unit='batch', leave=False, disable=desc is None or not rt.is_main, mininterval=0.5)
    try:
        for images, targets in bar:
            x = to_input(images, rt)
            t = targets_from(targets.to(rt.device, non_blocking=True))
            with rt.autocast():
                out = model(x)
            loss = loss_fn(out, t)
            if not torch.isfinite(loss):
                raise UserError("the training loss became NaN/inf; lower the learning rate (--optimizer) or use --amp off")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total += loss.detach() * len(images)
            count += len(images)
            if deadline is not None and time.monotonic() > deadline:
                finished = False
                break
    finally:
        bar.close()
        if isinstance(loader, Prefetcher):
            loader.close()
    stats = torch.tensor([float(total), float(count)], dtype=torch.float64)
    if rt.distributed:
        torch.distributed.all_reduce(stats)
    return (stats[0] / max(stats[1], 1)).item(), finished


def evaluate(model, images, targets, loss_fn, val_aug, back, rt, batch_size=64, desc=None):
    """Validation: (mean loss, mask probabilities (N, 101, 101) float32) over all ranks' shards.

    images (N, 101, 101) uint8; targets (N, K, 101, 101) uint8 (mask, and border for K=2).
    """
    from net.tta import TTAS
    if rt.distributed:
        # DDP syncs gradients, not BatchNorm running statistics: each rank's drift with its own
        # last batches. Validate every shard with rank 0's, the ones the snapshot saves.
        for buf in unwrap(model).buffers():
            torch.distributed.broadcast(buf, 0)
    idx = np.arange(rt.rank, len(images), rt.world_size)
    probs, loss = predict_probs(unwrap(model), images[idx], val_aug, back, TTAS['null'], rt, batch_size,
                                out_dtype=np.float32, desc=desc, targets=targets[idx], loss_fn=loss_fn)
    probs = probs['mask']
    if not rt.distributed:
        return loss, probs
    parts = [None] * rt.world_size
    torch.distributed.all_gather_object(parts, (idx, probs, loss * len(idx)))
    full = np.empty((len(images), 101, 101), np.float32)
    for i, p, _ in parts:
        full[i] = p
    return sum(p[2] for p in parts) / len(images), full


def amp_scaler(rt):
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    if rt.amp_dtype == torch.float16:
        return torch.amp.GradScaler(rt.device.type)
    return None


def cosine_time_factor(fraction, floor=0.01):
    """Learning-rate multiplier for a schedule driven by the share of the time budget spent."""
    fraction = min(max(fraction, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction))


def _rng_state():
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def fit(model, loss_fn, optimizer, train_set, val_images, val_targets, val_aug, back, rt, exp, config,
        resume=None, on_epoch_end=None):
    """Train for config['n_epochs'] epochs in config['cycles'] learning-rate cycles.

    After every epoch: validate on the fold, write a snapshot and its validation masks when the
    validation loss or score of the current cycle improved, rewrite the log, and write a
    checkpoint that `resume` (the loaded checkpoint dict) continues from exactly.
    Only rank 0 writes. Returns a summary dict (best epoch, score, paths).
    """
    from net.optim import build_scheduler
    from utils.metric import mean_iou, score

    n_epochs, cycles = config['n_epochs'], config['cycles']
    per_cycle = math.ceil(n_epochs / cycles)
    base_lrs = [g['lr'] for g in optimizer.param_groups]
    scaler = amp_scaler(rt)
    budget = config.get('max_minutes') or 0
    by_time = budget > 0 and config.get('schedule_by') == 'time'
    rows, best, done, spent = [], None, 0, 0.0
    scheduler = None
    if resume is not None:
        unwrap(model).load_state_dict(resume['model'])
        optimizer.load_state_dict(resume['optimizer'])
        if scaler is not None and resume.get('scaler'):
            scaler.load_state_dict(resume['scaler'])
        rows, best, done, spent = resume['rows'], resume['best'], resume['epoch'], resume['seconds_spent']
        if rt.is_main:
            exp.write_log(rows)  # a kill between checkpoint and log left the log one epoch behind
        base_lrs = resume['base_lrs']
        _set_rng_state(resume['rng'])
        if done % per_cycle and not by_time:
            scheduler = build_scheduler(config['scheduler'], optimizer, per_cycle)
            scheduler.load_state_dict(resume['scheduler'])
    start = time.monotonic() - spent
    deadline = start + budget * 60 if budget else None
    stopped_early = False
    swa_share = config.get('swa') or 0.0
    swa = None
    if swa_share and resume is not None and resume.get('swa') is not None:
        swa = _averaged(model, resume['swa'])
    for epoch in range(done + 1, n_epochs + 1):
        if by_time:
            # cycles split the time budget evenly; each runs its own cosine
            spent_share = (time.monotonic() - start) / (budget * 60) * cycles
            cycle = min(int(spent_share), cycles - 1)
            new_cycle = epoch == 1 or cycle != rows[-1]['cycle']
        else:
            cycle = (epoch - 1) // per_cycle
            new_cycle = (epoch - 1) % per_cycle == 0
        if new_cycle:
            # A new cycle restarts the schedule from the base rate and keeps its own best snapshots.
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g['lr'] = lr
            if not by_time:
                scheduler = build_scheduler(config['scheduler'], optimizer, per_cycle)
            best = {'val_loss': float('inf'), 'val_score': -1.0, 'epoch': 0, 'path': None}
        if by_time:
            f = cosine_time_factor(spent_share - cycle)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g['lr'] = lr * f
        lr = optimizer.param_groups[0]['lr']
        t0 = time.monotonic()
        loader = batches(train_set, config['batch_size'], rt, config['seed'], epoch)
        train_loss, finished = train_one_epoch(model, loader, loss_fn, optimizer, rt, scaler, deadline,
                                               desc=f"epoch {epoch}/{n_epochs}")
        val_loss, probs = evaluate(model, val_images, val_targets, loss_fn, val_aug, back, rt,
                                   config.get('val_batch_size', 64), desc='validation')
        pred = probs > 0.5
        masks = val_targets[:, 0]
        metrics = {'val_loss': val_loss, 'val_iou': mean_iou(pred, masks), 'val_score': score(pred, masks)}
        seconds = time.monotonic() - t0
        rows.append({'epoch': epoch, 'cycle': cycle, 'train_loss': train_loss, **metrics, 'lr': lr, 'seconds': seconds})
        improved = metrics['val_loss'] < best['val_loss'] or metrics['val_score'] > best['val_score']
        saved = None
        if improved and rt.is_main:
            saved = exp.save_snapshot(unwrap(model).state_dict(), config, epoch, cycle,
                                      {**metrics, 'train_loss': train_loss}, probs)
        if improved:
            if metrics['val_score'] > best['val_score']:
                best.update(epoch=epoch, path=str(saved) if saved else None)
            best['val_loss'] = min(best['val_loss'], metrics['val_loss'])
            best['val_score'] = max(best['val_score'], metrics['val_score'])
        if scheduler is not None:
            scheduler.step()
        if swa_share and _in_swa_window(swa_share, epoch, n_epochs, start, budget, by_time):
            swa = swa if swa is not None else _averaged(model)
            swa.update_parameters(unwrap(model))
        if rt.is_main:
            # Checkpoint before log: a kill between the two then leaves a log one epoch behind, which
            # --resume rewrites from the checkpoint's rows, never a logged epoch that cannot be resumed.
            exp.save_checkpoint({
                'model': unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict() if scheduler is not None else {},
                'scaler': scaler.state_dict() if scaler is not None else {},
                'epoch': epoch, 'cycle': cycle, 'rows': rows, 'best': best, 'base_lrs': base_lrs,
                'rng': _rng_state(), 'seconds_spent': time.monotonic() - start, 'config': config,
                'swa': swa.state_dict() if swa is not None else None,
            })
            exp.write_log(rows)
            tqdm.write(f"epoch {epoch}/{n_epochs}  train {train_loss:.4f}  val {val_loss:.4f}  "
                       f"iou {metrics['val_iou']:.3f}  score {metrics['val_score']:.3f}  lr {lr:.2e}  "
                       f"{seconds:.1f}s{'  saved ' + saved.name if saved else ''}")
            if on_epoch_end is not None:
                on_epoch_end(rows, probs)
        if rt.distributed:
            torch.distributed.barrier()
        if not finished or (deadline is not None and time.monotonic() > deadline):
            stopped_early = epoch < n_epochs
            break
    top = max(rows, key=lambda r: r['val_score']) if rows else None
    summary = {'best': top, 'epochs_run': len(rows), 'stopped_by_budget': stopped_early,
               'minutes': (time.monotonic() - start) / 60, 'swa': None}
    if swa is not None and int(swa.n_averaged) > 1:
        summary['swa'] = _finish_swa(swa, train_set, val_images, val_targets, loss_fn, val_aug, back, rt, exp,
                                     config, rows[-1]['epoch'])
    return summary


def _in_swa_window(share, epoch, n_epochs, start, budget, by_time):
    """Whether the epoch that just ended falls in the last `share` of the run (of its time budget when by_time)."""
    if by_time:
        return (time.monotonic() - start) / (budget * 60) >= 1.0 - share
    return epoch > n_epochs * (1.0 - share)


def _averaged(model, state=None):
    """An equal-weight running average of the model's weights (stochastic weight averaging)."""
    avg = torch.optim.swa_utils.AveragedModel(unwrap(model), use_buffers=False)
    if state is not None:
        avg.load_state_dict(state)
    return avg


@torch.no_grad()
def _finish_swa(swa, train_set, val_images, val_targets, loss_fn, val_aug, back, rt, exp, config, last_epoch):
    """Re-estimate the averaged weights' BatchNorm statistics on one training pass, validate, save.

    Averaged weights do not match any model's running statistics, so these are recomputed as a
    plain mean over the pass (momentum None). Returns the SWA row (metrics and snapshot path).
    """
    from utils.metric import mean_iou, score
    net = swa.module
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved_momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    loader = batches(train_set, config['batch_size'], rt, config['seed'], last_epoch + 1)
    for images, _ in tqdm(loader, desc='SWA BatchNorm pass', unit='batch', leave=False, disable=not rt.is_main):
        with rt.autocast():
            net(to_input(images, rt))
    for m, mom in zip(norms, saved_momenta):
        m.momentum = mom
    if rt.distributed:
        for buf in net.buffers():
            torch.distributed.all_reduce(buf)
            buf.div_(rt.world_size)
    val_loss, probs = evaluate(net, val_images, val_targets, loss_fn, val_aug, back, rt,
                               config.get('val_batch_size', 64), desc='validation (SWA)')
    pred, masks = probs > 0.5, val_targets[:, 0]
    metrics = {'val_loss': val_loss, 'val_iou': mean_iou(pred, masks), 'val_score': score(pred, masks)}
    row = {'epoch': last_epoch, 'averaged': int(swa.n_averaged), **metrics, 'path': None}
    if rt.is_main:
        row['path'] = str(exp.save_snapshot(net.state_dict(), config, last_epoch, 'swa', metrics, probs))
        tqdm.write(f"SWA of the last {row['averaged']} epochs: val {val_loss:.4f}  iou {metrics['val_iou']:.3f}  "
                   f"score {metrics['val_score']:.3f}  saved {row['path']}")
    return row
