"""Training augmentations (albumentations, numpy) and deterministic validation/test transforms (torch).

Which train set, validation input and back transform go together, and at what input size, is
``net.geometry``'s record of each preset.

Every train factory takes ``p`` (scales the probability of every random op; ``p=0`` leaves only the
deterministic geometry, which then equals the paired val aug) and ``seed``.
"""
import os
import random

# albumentations 2.x asks the package index for a newer version when it is imported: a 2 s timeout
# and a warning line on a machine without network. Set before the first import of it anywhere.
os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
import albumentations as A  # noqa: E402
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import lookup

SRC = 101  # TGS tile side

# 128 = 101 + 27; the odd pixel goes bottom/right, in train (albumentations) and val (torch) alike.
PAD_128 = (13, 14)
# 112 = 101 + 11: the smallest multiple of 16 (four stride-2 stages) above 101.
PAD_112 = (5, 6)
# 256 = 202 + 2 * 27: an exact 2x upscale keeps the back transform a clean 2x2 average.
MID_256, PAD_256 = 2 * SRC, 27

# Resize masks with half-pixel-centred nearest (same sampling grid as bilinear/align_corners=False):
# plain INTER_NEAREST samples floor(x * scale) and shifts the 101->128 mask by ~0.4 px against the image.
MASK_NEAREST = cv2.INTER_NEAREST_EXACT
REFLECT = cv2.BORDER_REFLECT_101  # == torch F.pad(mode='reflect'), so train and val padding agree

# Largest shift of train_128_v3 (px at 101x101, ~10% of the tile): salt stays mostly in view.
SHIFT_V3 = 10


def reseed(aug, seed=None):
    """Give all transforms of ``aug`` one shared generator seeded with ``seed`` (None: OS entropy).

    albumentations 2.x gives each transform its own generator, all seeded alike, so a seeded Compose
    would draw correlated decisions (e.g. flip and brightness always together); one shared generator
    keeps them independent. Also marks ``aug`` as seeded in this process, so an explicit call in a
    ``worker_init_fn`` is not overridden by ForkSafeCompose. Returns ``aug``.
    """
    aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
    aug._pid = os.getpid()
    return aug


class ForkSafeCompose(A.Compose):
    """A Compose that reseeds itself the first time it runs in a new process.

    Forked (or pickled) DataLoader workers would otherwise inherit one generator state and all draw the
    same augmentations. In a torch worker the new seed mixes the factory seed with
    ``torch.initial_seed()``, which differs per worker and per epoch and follows ``torch.manual_seed``
    in the main process, so seeded runs stay reproducible.
    """

    def __call__(self, *args, **data):
        if self._pid != os.getpid():
            reseed(self, _process_seed(self._base_seed))
        return super().__call__(*args, **data)


def _process_seed(base_seed):
    if torch.utils.data.get_worker_info() is not None:
        entropy = [torch.initial_seed()] + ([] if base_seed is None else [base_seed])
    elif base_seed is not None:
        entropy = [base_seed, os.getpid()]  # a non-torch subprocess: distinct, not reproducible
    else:
        return None
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def _compose(transforms, seed):
    aug = ForkSafeCompose(transforms)
    aug._base_seed = seed
    return reseed(aug, seed)


def _affine(p):
    # Reflect borders (not constant) keep the same statistics at the edges as val's reflect padding;
    # albumentations applies the border mode to masks too, so salt is mirrored along with the image.
    return A.Affine(
        scale=(0.9, 1.1), keep_ratio=True, rotate=(-10, 10),
        translate_percent={'x': (-0.06, 0.06), 'y': (-0.06, 0.06)},
        interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
        border_mode=REFLECT, p=p)


def _pad(pad_tl, pad_br):
    left = top = pad_tl
    right = bottom = pad_br
    return A.Pad(padding=(left, top, right, bottom), border_mode=REFLECT)


def _resize(size):
    return A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=MASK_NEAREST)


def train_128_v1(p=1.0, seed=None):
    """Light: hflip, mild brightness/contrast, resize 101->128. uint8 (101,101) -> (128,128)."""
    return _compose([
        A.HorizontalFlip(p=0.5 * p),
        A.RandomBrightnessContrast(brightness_limit=0.08, contrast_limit=0.08, p=0.5 * p),
        _resize(128),
    ], seed)


def train_128_v2(p=1.0, seed=None):
    """Heavier: hflip, affine (shift, scale 0.9-1.1, rotate +-10 deg, reflect), b/c, gamma, resize->128."""
    return _compose([
        A.HorizontalFlip(p=0.5 * p),
        _affine(0.75 * p),
        A.RandomBrightnessContrast(brightness_limit=0.12, contrast_limit=0.12, p=0.5 * p),
        A.RandomGamma(gamma_limit=(85, 115), p=0.3 * p),
        _resize(128),
    ], seed)


def _shift_pad(p, seed, pad):
    return _compose([
        A.HorizontalFlip(p=0.5 * p),
        # A random 101-crop of the reflect-padded tile is an integer shift with mirrored fill.
        A.Sequential([_pad(SHIFT_V3, SHIFT_V3), A.RandomCrop(SRC, SRC)], p=0.5 * p),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5 * p),
        _pad(*pad),
    ], seed)


def train_128_v3(p=1.0, seed=None):
    """Pad-based, no interpolation: hflip, integer shift on a reflect-101 padded tile, b/c, pad 13/14 -> 128."""
    return _shift_pad(p, seed, PAD_128)


def train_112_v3(p=1.0, seed=None):
    """``train_128_v3`` with a reflect-101 pad of 5/6 -> (112, 112): the same pixels, 1.3x less compute."""
    return _shift_pad(p, seed, PAD_112)


def train_256_v1(p=1.0, seed=None):
    """hflip, affine (reflect), b/c at 101, then resize 101->202 and reflect-101 pad 27 -> (256,256)."""
    return _compose([
        A.HorizontalFlip(p=0.5 * p),
        _affine(0.5 * p),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5 * p),
        _resize(MID_256),
        _pad(PAD_256, PAD_256),
    ], seed)


def _check_side(x, side, name):
    if x.dim() != 4 or x.shape[-2:] != (side, side):
        raise ValueError(f"{name} expects (N, C, {side}, {side}), got {tuple(x.shape)}")


def val_128(x):
    """Reflect-101 pad (13 top/left, 14 bottom/right): float (N,C,101,101) -> (N,C,128,128)."""
    _check_side(x, SRC, 'val_128')
    a, b = PAD_128
    return F.pad(x, (a, b, a, b), mode='reflect')


def val_112(x):
    """Reflect-101 pad (5 top/left, 6 bottom/right): float (N,C,101,101) -> (N,C,112,112)."""
    _check_side(x, SRC, 'val_112')
    a, b = PAD_112
    return F.pad(x, (a, b, a, b), mode='reflect')


def val_128_resize(x):
    """Bilinear resize (align_corners=False): float (N,C,101,101) -> (N,C,128,128)."""
    _check_side(x, SRC, 'val_128_resize')
    return F.interpolate(x, size=(128, 128), mode='bilinear', align_corners=False)


def val_256(x):
    """Bilinear resize to 202, then reflect-101 pad 27 each side: float (N,C,101,101) -> (N,C,256,256)."""
    _check_side(x, SRC, 'val_256')
    x = F.interpolate(x, size=(MID_256, MID_256), mode='bilinear', align_corners=False)
    return F.pad(x, (PAD_256,) * 4, mode='reflect')


def crop_from_128(p):
    """Exact inverse of val_128's geometry: (N,C,128,128) -> (N,C,101,101) by cropping [13:114]."""
    _check_side(p, 128, 'crop_from_128')
    a = PAD_128[0]
    return p[..., a:a + SRC, a:a + SRC]


def crop_from_112(p):
    """Exact inverse of val_112's geometry: (N,C,112,112) -> (N,C,101,101) by cropping [5:106]."""
    _check_side(p, 112, 'crop_from_112')
    a = PAD_112[0]
    return p[..., a:a + SRC, a:a + SRC]


def resize_from_any(p):
    """Bilinear resize (align_corners=False) from any (N,C,S,S) to (N,C,101,101)."""
    if p.dim() != 4:
        raise ValueError(f"resize_from_any expects (N, C, S, S), got {tuple(p.shape)}")
    if p.shape[-2:] == (SRC, SRC):
        return p
    return F.interpolate(p, size=(SRC, SRC), mode='bilinear', align_corners=False)


def crop_resize_from_256(p):
    """Inverse of val_256: crop the central 202 of (N,C,256,256), bilinear resize to (N,C,101,101)."""
    _check_side(p, 256, 'crop_resize_from_256')
    p = p[..., PAD_256:PAD_256 + MID_256, PAD_256:PAD_256 + MID_256]
    # 202 -> 101 is an exact 2x downscale: bilinear with align_corners=False averages each 2x2 block.
    return F.interpolate(p, size=(SRC, SRC), mode='bilinear', align_corners=False)


VAL_AUGS = {
    'val_128': val_128,
    'val_128_resize': val_128_resize,
    'val_256': val_256,
    'val_112': val_112,
}

BACK_TRANSFORMS = {
    'crop_from_128': crop_from_128,
    'resize_from_any': resize_from_any,
    'crop_resize_from_256': crop_resize_from_256,
    'crop_from_112': crop_from_112,
}

def build_val_aug(name):
    """The tensor transform ``name``: float (N,C,101,101) -> (N,C,S,S)."""
    return lookup(VAL_AUGS, name, 'validation augmentation')


def build_back_transform(name):
    """The tensor transform ``name``: (N,C,S,S) -> (N,C,101,101)."""
    return lookup(BACK_TRANSFORMS, name, 'back transform')
