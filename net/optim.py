"""Optimizers and learning-rate schedules, by the names the original pipeline used."""
import functools

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


def _step(step_size, gamma, optimizer, epochs):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def _cosine(optimizer, epochs):
    # Anneals to 1% of the base rate over one cycle; snapshot ensembling restarts it per cycle.
    base = optimizer.param_groups[0]['lr']
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=base * 0.01)


def _constant(optimizer, epochs):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


SCHEDULERS = {
    'step_50_01': functools.partial(_step, 50, 0.1),
    'step_50_05': functools.partial(_step, 50, 0.5),
    'step_20_05': functools.partial(_step, 20, 0.5),
    'step_100_07': functools.partial(_step, 100, 0.7),
    'cosine': _cosine,
    'none': _constant,
}


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


def build_scheduler(name, optimizer, epochs_per_cycle):
    """The schedule registered as `name`; stepped once per epoch, restarted at each cycle."""
    return lookup(SCHEDULERS, name, 'scheduler')(optimizer, epochs_per_cycle)
