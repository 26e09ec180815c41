"""One record per input geometry: how a preset places the 101x101 tile for the model, in training, in
validation and back.

``--input NAME`` (pad112, pad128, resize128, resize128_affine, resize202_pad256) or its alias
``--train_augs PRESET`` picks a preset; its validation input, back-transform and input size follow from
it. ``--val_augs`` / ``--val_transforms`` may still name them explicitly (the original's commands do):
``inputs_for`` checks such names against the preset, the one place where they are checked.

The presets (input is always the 101x101 TGS tile):

=================  ======================================  ===================  ========================
train aug (input)  what it does                            paired val aug       back transform
=================  ======================================  ===================  ========================
train_128_v1       hflip, mild brightness/contrast,        val_128_resize       resize_from_any
                   resize 101->128
train_128_v2       hflip, affine (reflect), b/c, gamma,    val_128_resize       resize_from_any
                   resize 101->128
train_128_v3       hflip, shift on reflect-101 padding,    val_128              crop_from_128
                   b/c, reflect-101 pad 13/14 -> 128
train_256_v1       hflip, affine (reflect), b/c,           val_256              crop_resize_from_256
                   resize 101->202, reflect-101 pad 27
train_112_v3       as train_128_v3, reflect-101 pad 5/6    val_112              crop_from_112
                   -> 112
=================  ======================================  ===================  ========================
"""
from dataclasses import dataclass
from typing import Callable

from net import augmentations as aug
from utils.errors import UserError, lookup


@dataclass(frozen=True)
class Geometry:
    """An input preset.

    name: the --train_augs name; train: the albumentations set's factory, ``train(p=1.0, seed=None)``
    -> Compose giving (size, size) arrays; device: the name of its batched twin in
    net.device_aug.DEVICE_AUGS; val: the name in augmentations.VAL_AUGS of the deterministic input
    transform, float (N,C,101,101) -> (N,C,size,size); back: the name in augmentations.BACK_TRANSFORMS
    that undoes it, (N,C,size,size) -> (N,C,101,101); size: the model's input side.
    """
    name: str
    train: Callable
    device: str
    val: str
    back: str
    size: int


PRESETS = {g.name: g for g in (
    Geometry('train_128_v1', aug.train_128_v1, 'train_128_v1', 'val_128_resize', 'resize_from_any', 128),
    Geometry('train_128_v2', aug.train_128_v2, 'train_128_v2', 'val_128_resize', 'resize_from_any', 128),
    Geometry('train_128_v3', aug.train_128_v3, 'train_128_v3', 'val_128', 'crop_from_128', 128),
    Geometry('train_256_v1', aug.train_256_v1, 'train_256_v1', 'val_256', 'crop_resize_from_256', 256),
    Geometry('train_112_v3', aug.train_112_v3, 'train_112_v3', 'val_112', 'crop_from_112', 112),
)}


# --input NAME: a geometry by what it does to the 101x101 tile. --train_augs takes the preset names, an
# alias of the same choice: both set the run's train_augs.
INPUTS = {'pad112': 'train_112_v3', 'pad128': 'train_128_v3', 'resize128': 'train_128_v1',
          'resize128_affine': 'train_128_v2', 'resize202_pad256': 'train_256_v1'}


def input_preset(name):
    """The --train_augs preset that --input `name` stands for (argparse type: a bad name is a usage error)."""
    import argparse
    if name not in INPUTS:
        raise argparse.ArgumentTypeError(f"unknown input {name!r}; pick one of {', '.join(INPUTS)}")
    return INPUTS[name]


def input_name(train_augs):
    """The --input name of a preset."""
    return next(k for k, v in INPUTS.items() if v == train_augs)


def preset(name):
    """The Geometry registered as `name`; UserError listing the valid names when it is unknown."""
    return lookup(PRESETS, name, 'train augmentation')


def build_train_aug(name, p=1.0, seed=None):
    """The train Compose of preset ``name``; call it as ``aug(image=img, mask=m)`` or ``aug(image=img, masks=[m, b])``.

    p scales the probability of every random op (0: only the deterministic geometry, which then
    equals the preset's validation input); seed: None for OS entropy.
    """
    return preset(name).train(p=p, seed=seed)


def of_val(val):
    """The first preset whose validation input is `val` (every VAL_AUGS name has one): its back and size."""
    lookup(aug.VAL_AUGS, val, 'validation augmentation')
    return next(g for g in PRESETS.values() if g.val == val)


def inputs_for(size, val, back=None, sized_by=None):
    """(val, back): the validation input `val` and the back-transform that undoes it, checked.

    The one agreement check of input names: UserError (one line) when `val` does not give `size` x
    `size` inputs (size None: any) or `back` (None: the one that undoes `val`) does not undo it.
    sized_by: what fixed `size`, in words, for the message (e.g. '--train_augs train_128_v1').
    """
    g = of_val(val)
    if size is not None and g.size != size:
        fits = ' or '.join(sorted(v for v in aug.VAL_AUGS if of_val(v).size == size))
        raise UserError(f"--val_augs {val} gives {g.size}x{g.size} inputs but {sized_by or 'the model'} works at "
                        f"{size}x{size}; pass --val_augs {fits} or leave --val_augs out")
    back = back or g.back
    lookup(aug.BACK_TRANSFORMS, back, 'back transform')
    if back != g.back:
        raise UserError(f"--val_transforms {back} does not undo --val_augs {val}; pass --val_transforms {g.back} "
                        f"or leave --val_transforms out")
    return val, back


def run_inputs(train_augs, val_augs=None, val_transforms=None):
    """(val, back) of a training run: the preset's own, or the --val_augs / --val_transforms overrides checked."""
    g = preset(train_augs)
    return inputs_for(g.size, val_augs or g.val, val_transforms, sized_by=f"--train_augs {train_augs}")


# Where the 101x101 tile lies in the model input of each padding validation input: the top-left
# pad. A resize spreads the tile over the whole input, so it has no such window.
TILE_AT = {'val_112': aug.PAD_112[0], 'val_128': aug.PAD_128[0]}


def tile_window(train_augs, val_augs=None):
    """Offset a of the fixed window [a:a+101, a:a+101] of the model input that holds the tile (no shift).

    For --loss_region center. The window is fixed: the train shift moves the tile's content inside
    the input, and the window then holds the shifted tile (its reflect-101 fill included), as the
    validation input holds the unshifted one. UserError (one line) for a resize preset, or a
    --val_augs that does not pad the way the preset does.
    """
    g = preset(train_augs)
    if g.val not in TILE_AT:
        pads = ', '.join(sorted(n for n, p in PRESETS.items() if p.val in TILE_AT))
        raise UserError(f"--loss_region center needs a padding preset, and --train_augs {train_augs} resizes the "
                        f"tile; pass --train_augs {pads}, or --loss_region full")
    if val_augs is not None and val_augs != g.val:
        raise UserError(f"--loss_region center takes the tile's window of --train_augs {train_augs}, which "
                        f"--val_augs {val_augs} does not place alike; leave --val_augs out")
    return TILE_AT[g.val]
