"""Optimizers and learning-rate schedules, by the names the original pipeline used."""
import functools
import math

import torch

from utils.errors import lookup


def _adam(lr, params, **kw):
    return torch.optim.Adam(params, lr=lr, **kw)


def _sgd(lr, params, **kw):
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4, nesterov=True, **kw)


OPTIMIZERS = {
    'adam_1e-3': functools.partial(_adam, 1e-3),
    'adam_1e-4': functools.partial(_adam, 1e-4),
    'adam_1e-5': functools.partial(_adam, 1e-5),
    'sgd_1e-2': functools.partial(_sgd, 1e-2),
    'sgd_1e-3': functools.partial(_sgd, 1e-3),
    'sgd_1e-4': functools.partial(_sgd, 1e-4),
}


def _step(step_size, gamma, base_lr, epoch, epochs):
    # Multiplied once per step, as torch's StepLR does, so that the rates agree with it to the bit.
    lr = base_lr
    for _ in range(epoch // step_size):
        lr = lr * gamma
    return lr


def _cosine(base_lr, epoch, epochs):
    # Anneals to 1% of the base rate over one cycle; snapshot ensembling restarts it per cycle. Written as
    # torch's CosineAnnealingLR recurrence (not the closed form, which differs in the last bits), so runs
    # reproduce the rates that earlier versions logged.
    period, floor = max(1, epochs), base_lr * 0.01
    lr = base_lr
    for e in range(1, epoch + 1):
        if (e - 1 - period) % (2 * period) == 0:
            lr = lr + (base_lr - floor) * (1 - math.cos(math.pi / period)) / 2
        else:
            lr = ((1 + math.cos(math.pi * e / period)) / (1 + math.cos(math.pi * (e - 1) / period))
                  * (lr - floor) + floor)
    return lr


def _constant(base_lr, epoch, epochs):
    return base_lr


# name -> f(base_lr, epoch, epochs): the rate of the cycle's epoch (0, 1, ...) of `epochs`.
SCHEDULERS = {
    'step_50_01': functools.partial(_step, 50, 0.1),
    'step_50_05': functools.partial(_step, 50, 0.5),
    'step_20_05': functools.partial(_step, 20, 0.5),
    'step_100_07': functools.partial(_step, 100, 0.7),
    'cosine': _cosine,
    'none': _constant,
}

# The schedule of --schedule_by time: its progress is the share of the cycle's time budget spent.
BY_TIME = 'time'


def cosine_time_factor(fraction, floor=0.01):
    """Learning-rate multiplier for a schedule driven by the share of the time budget spent."""
    fraction = min(max(fraction, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction))


def lr_at(schedule, base_lr, progress, cycle_epochs=1):
    """The learning rate at `progress` into a cycle, which starts again from `base_lr`.

    schedule: a SCHEDULERS name, with progress the whole epochs done in the cycle (0 for its first) of
    cycle_epochs; or BY_TIME, with progress the share (0-1) of the cycle's time budget spent.
    """
    if schedule == BY_TIME:
        return base_lr * cosine_time_factor(progress)
    return lookup(SCHEDULERS, schedule, 'scheduler')(base_lr, progress, cycle_epochs)


def build_optimizer(name, params, lr=None, fused=False):
    """The optimizer registered as `name` over `params`.

    lr: a learning rate instead of the name's (e.g. scaled with a larger batch). fused: one
    kernel for the whole update instead of a few per parameter group (CUDA: fewer launches).
    """
    factory = lookup(OPTIMIZERS, name, 'optimizer')
    kw = {'fused': True} if fused else {}
    if lr is not None:
        factory = functools.partial(factory.func, lr)
    return factory(params, **kw)

