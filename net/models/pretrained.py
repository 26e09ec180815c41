"""Encoder initialisation from ImageNet weights or a local state-dict file.

``pretrained`` is one of: None / 'none' (random init), 'imagenet' (torchvision weights,
from torch.hub's cache or downloaded once), 'auto' (ImageNet weights where the encoder has them
and they can be had, else random init, quietly), or a path to an encoder state dict.
A broken local file is the user's to fix, so it raises :class:`UserError`; unavailable
ImageNet weights only cost accuracy, so they print one warning line and training goes on.
"""
from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from urllib.parse import urlparse

import torch

from utils.errors import UserError

# Keys of a classifier's head: present in ImageNet checkpoints, absent from an encoder.
_HEAD_PREFIXES = ('fc.', 'classifier.', 'last_linear.', 'logits.')
# A stalled connection must not hang the run; an unreachable host fails before this anyway.
_DOWNLOAD_TIMEOUT_S = 30


def warn(msg):
    """Print one warning line on stderr (not ``warnings.warn``: that adds a source line and dedups)."""
    print(f'warning: {msg}', file=sys.stderr, flush=True)


def _short(err):
    """First line of an exception's text, bounded, so messages stay on one line."""
    text = str(err).strip().splitlines()
    text = text[0] if text else type(err).__name__
    return (text[:160] + '...') if len(text) > 160 else text


def hub_checkpoint_path(weights):
    """Where torch.hub keeps (or would download) the file of torchvision ``weights``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(weights.url).path))


def _fetch_imagenet(weights, arch, quiet=False):
    """State dict of torchvision ``weights``, or None (after a warning unless quiet) when it cannot be had."""
    cached = hub_checkpoint_path(weights)
    if os.path.isfile(cached):
        try:
            return torch.load(cached, map_location='cpu', weights_only=True)
        except Exception as e:
            raise UserError(f'cached ImageNet weights {cached} are unreadable ({_short(e)}); '
                            f'delete the file and run again') from None
    previous = socket.getdefaulttimeout()
    try:
        if previous is None:
            socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:
        if quiet:
            return None
        warn(f'{arch}: ImageNet weights could not be loaded (not in {os.path.dirname(cached)} and download '
             f'failed: {_short(e)}); training goes on from random init')
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _read_file(path):
    """Load a state dict from ``path``; any problem becomes a one-line UserError naming the file."""
    if not os.path.exists(path):
        raise UserError(f'pretrained weights file {path} does not exist')
    if not os.path.isfile(path):
        raise UserError(f'pretrained weights file {path} is not a regular file')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f'pretrained weights file {path} is not a readable PyTorch state dict ({_short(e)})') from None
    # training checkpoints commonly nest the weights one level down
    for key in ('state_dict', 'model'):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f'pretrained weights file {path} does not hold a state dict (found {type(obj).__name__})')
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise UserError(f'pretrained weights file {path} is not a state dict: entry {bad[0]!r} is not a tensor')
    return dict(obj)


def _strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_state_into_encoder(encoder, state, source, arch):
    """Copy ``state`` into ``encoder`` after checking every key and shape; UserError on mismatch.

    Tolerated differences, all harmless: a DataParallel 'module.' prefix, a whole-model state
    dict of this package (its 'encoder.' part is used), classifier-head keys, and missing
    BatchNorm ``num_batches_tracked`` counters.
    """
    own = encoder.state_dict()
    if all(k.startswith('module.') for k in state):
        state = _strip(state, 'module.')
    if not any(k in own for k in state) and any(k.startswith('encoder.') for k in state):
        state = _strip(state, 'encoder.')
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_HEAD_PREFIXES)}

    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state if k not in own]
    wrong = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys (e.g. {missing[0]})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[0]})')
        if wrong:
            parts.append(f'{len(wrong)} shape mismatches (e.g. {wrong[0]})')
        raise UserError(f'{source} does not fit the {arch} encoder: {"; ".join(parts)}; '
                        f'expected the state dict of a {arch} model\'s encoder')
    full = {k: state.get(k, v) for k, v in own.items()}
    encoder.load_state_dict(full, strict=True)


def init_encoder_weights(encoder, pretrained, arch, imagenet=None):
    """Initialise ``encoder`` in place according to ``pretrained`` (see module docstring).

    imagenet: a torchvision ``WeightsEnum`` member for this encoder, or None when torchvision
    has no weights for it (then 'imagenet' only warns and asks for a local file).
    """
    if pretrained is None or (isinstance(pretrained, str) and pretrained.strip().lower() in ('', 'none')):
        return
    choice = pretrained.strip().lower() if isinstance(pretrained, str) else None
    if choice == 'auto':
        # The default: what an encoder can have, without a word when it cannot (e.g. offline).
        state = _fetch_imagenet(imagenet, arch, quiet=True) if imagenet is not None else None
        if state is not None:
            load_state_into_encoder(encoder, state, f'ImageNet weights {imagenet}', arch)
        return
    if choice == 'imagenet':
        if imagenet is None:
            warn(f'{arch}: torchvision has no ImageNet weights for this encoder; pass a local encoder '
                 f'state dict file as pretrained=PATH; training goes on from random init')
            return
        state = _fetch_imagenet(imagenet, arch)
        if state is not None:
            load_state_into_encoder(encoder, state, f'ImageNet weights {imagenet}', arch)
        return
    if not isinstance(pretrained, (str, os.PathLike)):
        raise UserError(f"pretrained must be None, 'none', 'auto', 'imagenet' or a file path, got {pretrained!r}")
    path = os.fspath(pretrained)
    load_state_into_encoder(encoder, _read_file(path), f'pretrained weights file {path}', arch)
