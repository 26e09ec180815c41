"""The one training loop: fit, train_one_epoch, evaluate, SWA.

Nothing here parses arguments or knows file names: the scripts pass in the model, loss, data
and a `Runtime` (device, precision, distributed rank), so train.py and train_border.py differ
only in the targets and loss they hand to `fit`. Batches come from net.loader, device decisions
from net.runtime, the predictor (validation included) from net.inference.
"""
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from net.inference import predict_probs
from net.optim import BY_TIME, lr_at
from net.runtime import unwrap
from net.tta import TTAS
from utils.checkpoint import checkpoint_state
from utils.errors import UserError
from utils.metric import mean_iou, score, threshold_sweep

EPOCH_THRESHOLDS = np.arange(1, 20) / 20  # 0.05, 0.10, ..., 0.95


def threshold_peak(probs, masks):
    """(threshold, score) of the best of EPOCH_THRESHOLDS for probabilities (N, H, W) against binary masks;
    ties go to the lowest threshold."""
    scores = threshold_sweep(probs, masks, EPOCH_THRESHOLDS)
    b = int(np.argmax(scores))
    return float(EPOCH_THRESHOLDS[b]), float(scores[b])


def train_one_epoch(model, loader, loss_fn, optimizer, rt, scaler=None, deadline=None, desc=None, terms=None):
    """One pass over `loader` (an epoch of net.loader); returns (mean loss, finished).

    finished is False when `deadline` cut the epoch short. The loss sum and the NaN/inf check stay
    on the device until the epoch ends, so the host never waits for the GPU inside the epoch. A dict
    passed as `terms` receives the epoch's mean of each of the loss's parts (net.losses), summed on
    the device beside the loss and read with it.
    """
    model.train()
    total = torch.zeros((), device=rt.device, dtype=torch.float64)
    bad = torch.zeros((), device=rt.device, dtype=torch.int32)
    part_sums = {}
    count = 0
    finished = True
    bar = tqdm(loader, desc=desc, unit='batch', leave=False, disable=desc is None or not rt.is_main, mininterval=0.5)
    try:
        for x, t in bar:
            with rt.autocast():
                out = model(x)
            loss = loss_fn(out, t)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            loss = loss.detach()
            bad += (~torch.isfinite(loss)).int()
            total += loss.double() * len(x)
            if terms is not None:
                for name, v in getattr(loss_fn, 'parts', {}).items():
                    part_sums[name] = part_sums.get(name, 0) + v.double() * len(x)
            count += len(x)
            if deadline is not None and time.monotonic() > deadline:
                finished = False
                break
    finally:
        bar.close()
        loader.close()
    names = sorted(part_sums)  # every rank's loss has the same parts
    stats = torch.stack([total, torch.tensor(float(count), device=rt.device, dtype=torch.float64), bad.double(),
                         *(part_sums[k] for k in names)])
    if rt.distributed:
        torch.distributed.all_reduce(stats)
    total, count, bad, *sums = stats.tolist()  # the epoch's one wait for the device
    if terms is not None:
        terms.update({k: v / max(count, 1) for k, v in zip(names, sums)})
    if bad:
        raise UserError("the training loss became NaN/inf; lower the learning rate (--optimizer, --lr) or use --amp off")
    return total / max(count, 1), finished


def evaluate(model, images, targets, loss_fn, val_aug, back, rt, batch_size=64, desc=None):
    """Validation: (mean loss, mask probabilities (N, 101, 101) float32) over all ranks' shards.

    images (N, 101, 101) uint8; targets (N, K, 101, 101) uint8 (mask, and border for K=2); either
    may be a tensor already on the device. A loss with a ``salt_gate`` P (the salt-only losses of
    net.losses, whose masks mean nothing on empty images) has the masks of images whose salt
    probability is below P emptied, as predict's --empty_below P does: the metrics, the snapshot
    choice and the saved validation masks then judge the model as it is used.
    """
    if rt.distributed:
        # DDP syncs gradients, not BatchNorm running statistics: each rank's drift with its own
        # last batches. Validate every shard with rank 0's, the ones the snapshot saves.
        for buf in unwrap(model).buffers():
            torch.distributed.broadcast(buf, 0)
    idx = np.arange(rt.rank, len(images), rt.world_size)
    mine = (images, targets) if rt.world_size == 1 else (_take(images, idx), _take(targets, idx))
    gate = getattr(loss_fn, 'salt_gate', None)
    probs, loss = predict_probs(unwrap(model), mine[0], val_aug, back, TTAS['null'], rt, batch_size,
                                keys=('mask',) if gate is None else ('mask', 'salt'),
                                out_dtype=np.float32, desc=desc, targets=mine[1], loss_fn=loss_fn)
    if gate is not None:
        probs['mask'][probs['salt'] < gate] = 0.0
    probs = probs['mask']
    if rt.world_size == 1:
        return loss, probs
    parts = [None] * rt.world_size
    torch.distributed.all_gather_object(parts, (idx, probs, loss * len(idx)))
    full = np.empty((len(images), 101, 101), np.float32)
    for i, p, _ in parts:
        full[i] = p
    return sum(p[2] for p in parts) / len(images), full


def _take(arr, idx):
    if isinstance(arr, torch.Tensor):
        return arr[torch.from_numpy(idx).to(arr.device)]
    return arr[idx]


def amp_scaler(rt):
    """A gradient scaler for fp16 (bf16 and fp32 need none)."""
    if rt.amp_dtype == torch.float16:
        return torch.amp.GradScaler(rt.device.type)
    return None


def _rng_state():
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state):
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def fit(model, loss_fn, optimizer, train_set, val_images, val_targets, val_aug, back, rt, exp, config,
        resume=None, on_epoch_end=None, log_terms=False):
    """Train for config.n_epochs epochs in config.cycles learning-rate cycles (config: the run's resolved
    net.config.TrainConfig; its record() goes into every snapshot and checkpoint).

    After every epoch: validate on the fold, write a snapshot and its validation masks when the
    validation loss or score of the current cycle improved, rewrite the log, and write a
    checkpoint that `resume` (the loaded checkpoint dict) continues from exactly.
    Only rank 0 writes. Returns a summary dict (best epoch, score, paths). With log_terms, each row's
    'terms' holds the epoch's mean of every loss part (summed on the device only then: --tensorboard).
    """
    n_epochs, cycles = config.n_epochs, config.cycles
    record = config.record()
    per_cycle = math.ceil(n_epochs / cycles)
    base_lrs = [g['lr'] for g in optimizer.param_groups]
    scaler = amp_scaler(rt)
    budget = config.max_minutes or 0
    by_time = budget > 0 and config.schedule_by == 'time'
    schedule = BY_TIME if by_time else config.scheduler
    rows, best, done, spent = [], None, 0, 0.0
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
    # The validation fold stays on the device with the training fold (uploaded once, 6.5 MB).
    val_inputs = (val_images, val_targets)
    if rt.loader == 'device':
        val_inputs = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(rt.device) for a in val_inputs)
    start = time.monotonic() - spent
    deadline = start + budget * 60 if budget else None
    stopped_early = False
    swa_share = config.swa or 0.0
    swa = None
    if swa_share and resume is not None and resume.get('swa') is not None:
        swa = _averaged(model, resume['swa'])
    for epoch in range(done + 1, n_epochs + 1):
        if by_time:
            # cycles split the time budget evenly; each runs its own cosine
            spent_share = (time.monotonic() - start) / (budget * 60) * cycles
            cycle = min(int(spent_share), cycles - 1)
            new_cycle = epoch == 1 or cycle != rows[-1]['cycle']
            progress = spent_share - cycle
        else:
            cycle = (epoch - 1) // per_cycle
            progress = (epoch - 1) % per_cycle
            new_cycle = progress == 0
        if new_cycle:
            # A new cycle restarts the schedule from the base rate (progress 0) and keeps its own best snapshots.
            best = {'val_loss': float('inf'), 'val_score': -1.0, 'epoch': 0, 'path': None}
        for g, base in zip(optimizer.param_groups, base_lrs):
            g['lr'] = lr_at(schedule, base, progress, per_cycle)
        lr = optimizer.param_groups[0]['lr']
        t0 = time.monotonic()
        loader = train_set.epoch(config.batch_size, config.seed, epoch)
        terms = {} if log_terms else None
        train_loss, finished = train_one_epoch(model, loader, loss_fn, optimizer, rt, scaler, deadline,
                                               desc=f"epoch {epoch}/{n_epochs}", terms=terms)
        val_loss, probs = evaluate(model, *val_inputs, loss_fn, val_aug, back, rt,
                                   config.val_batch_size, desc='validation')
        pred = probs > 0.5
        masks = val_targets[:, 0]  # the host copy: metrics are computed in numpy
        metrics = {'val_loss': val_loss, 'val_iou': mean_iou(pred, masks), 'val_score': score(pred, masks)}
        # For the epoch line only: early on the masks are under-confident, so the score at 0.5 can sit at
        # the all-empty level while the score at a searched threshold is already climbing.
        best_th, best_th_score = threshold_peak(probs, masks)
        seconds = time.monotonic() - t0
        # 'terms' (the loss's parts) is not a log.csv column: the log keeps its columns, TensorBoard shows them.
        rows.append({'epoch': epoch, 'cycle': cycle, 'train_loss': train_loss, **metrics, 'lr': lr, 'seconds': seconds,
                     'terms': terms or {}})
        improved = metrics['val_loss'] < best['val_loss'] or metrics['val_score'] > best['val_score']
        saved = None
        if improved and rt.is_main:
            saved = exp.save_snapshot(unwrap(model).state_dict(), record, epoch, cycle,
                                      {**metrics, 'train_loss': train_loss}, probs)
        if improved:
            if metrics['val_score'] > best['val_score']:
                best.update(epoch=epoch, path=str(saved) if saved else None)
            best['val_loss'] = min(best['val_loss'], metrics['val_loss'])
            best['val_score'] = max(best['val_score'], metrics['val_score'])
        if swa_share and _in_swa_window(swa_share, epoch, n_epochs, start, budget, by_time):
            swa = swa if swa is not None else _averaged(model)
            swa.update_parameters(unwrap(model))
        last = epoch == n_epochs or not finished or (deadline is not None and time.monotonic() > deadline)
        if rt.is_main:
            # Checkpoint before log: a kill between the two then leaves a log one epoch behind, which
            # --resume rewrites from the checkpoint's rows, never a logged epoch that cannot be resumed.
            exp.save_checkpoint(checkpoint_state(
                unwrap(model).state_dict(), optimizer.state_dict(), scaler.state_dict() if scaler is not None else None,
                epoch, cycle, rows, best, base_lrs, _rng_state(), time.monotonic() - start, record,
                swa.state_dict() if swa is not None else None))
            exp.write_log(rows)
            tqdm.write(f"epoch {epoch}/{n_epochs}  train {train_loss:.4f}  val {val_loss:.4f}  "
                       f"iou {metrics['val_iou']:.3f}  score {metrics['val_score']:.3f} "
                       f"(at {best_th:.2f}: {best_th_score:.3f})  lr {lr:.2e}  "
                       f"{seconds:.1f}s{'  saved ' + saved.name if saved else ''}")
            if on_epoch_end is not None:
                on_epoch_end(rows, probs, final=last)
        if rt.distributed:
            torch.distributed.barrier()
        if last:
            stopped_early = epoch < n_epochs
            break
    top = max(rows, key=lambda r: r['val_score']) if rows else None
    summary = {'best': top, 'epochs_run': len(rows), 'stopped_by_budget': stopped_early,
               'minutes': (time.monotonic() - start) / 60, 'swa': None}
    if swa is not None and int(swa.n_averaged) > 1:
        summary['swa'] = _finish_swa(swa, train_set, *val_inputs, loss_fn, val_aug, back, rt, exp,
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
    net = swa.module
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved_momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    loader = train_set.epoch(config.batch_size, config.seed, last_epoch + 1)
    try:
        for x, _ in tqdm(loader, desc='SWA BatchNorm pass', unit='batch', leave=False, disable=not rt.is_main):
            with rt.autocast():
                net(x)
    finally:
        loader.close()
    for m, mom in zip(norms, saved_momenta):
        m.momentum = mom
    if rt.distributed:
        for buf in net.buffers():
            torch.distributed.all_reduce(buf)
            buf.div_(rt.world_size)
    val_loss, probs = evaluate(net, val_images, val_targets, loss_fn, val_aug, back, rt,
                               config.val_batch_size, desc='validation (SWA)')
    pred, masks = probs > 0.5, _host(val_targets)[:, 0]
    metrics = {'val_loss': val_loss, 'val_iou': mean_iou(pred, masks), 'val_score': score(pred, masks)}
    row = {'epoch': last_epoch, 'averaged': int(swa.n_averaged), **metrics, 'path': None}
    if rt.is_main:
        row['path'] = str(exp.save_snapshot(net.state_dict(), config.record(), last_epoch, 'swa', metrics, probs))
        tqdm.write(f"SWA of the last {row['averaged']} epochs: val {val_loss:.4f}  iou {metrics['val_iou']:.3f}  "
                   f"score {metrics['val_score']:.3f}  saved {row['path']}")
    return row


def _host(arr):
    return arr.cpu().numpy() if isinstance(arr, torch.Tensor) else arr
