"""Synthetic small-mask samples (train.py --small_crops F): corner crops holding a little salt, scaled back up.

Images with under 10 % salt are the ones the models miss most. A corner crop of a training tile
that holds only 50-300 salt pixels, resized back to 101x101, is a new image of that kind, in
the statistics of the real ones (2nd place of the competition). They are made once per run from
the fold's training images (never its validation images), deterministically from the run's seed,
and appended to the training arrays with a per-sample loss weight (CROP_WEIGHT), since a crop's
upscaled texture is not quite a real tile's.
"""
import cv2
import numpy as np

from net.augmentations import MASK_NEAREST, SRC
from utils.errors import UserError

SALT_PIXELS = (50, 300)   # salt pixels the crop holds, before the resize, both ends included
SIDES = (50, 90)          # square crop sides tried, both ends included: at least half the tile's context
CROP_WEIGHT = 0.5
# corner -> (flip rows, flip columns) that brings it to the top left
CORNERS = ((False, False), (False, True), (True, False), (True, True))


def corner_counts(masks, sides):
    """Salt pixels of every square corner crop: masks (N, 101, 101) -> (N, 4 corners, len(sides)) int64.

    Corners in CORNERS order (top left, top right, bottom left, bottom right); one integral image per
    corner, read at (side - 1, side - 1).
    """
    m = (np.asarray(masks) > 0).astype(np.int64)
    s = np.asarray(sides) - 1
    out = np.empty((len(m), len(CORNERS), len(s)), np.int64)
    for k, (fr, fc) in enumerate(CORNERS):
        v = m[:, ::-1] if fr else m
        v = v[:, :, ::-1] if fc else v
        out[:, k] = v.cumsum(1).cumsum(2)[:, s, s]
    return out


def corner_crop(arr, corner, side):
    """The side x side crop of a (101, 101) array at corner index `corner` (CORNERS order)."""
    fr, fc = CORNERS[corner]
    r0 = SRC - side if fr else 0
    c0 = SRC - side if fc else 0
    return arr[r0:r0 + side, c0:c0 + side]


def small_mask_crops(images, masks, fraction, seed, salt_pixels=SALT_PIXELS, sides=SIDES):
    """round(fraction * N) crops of images/masks (N, 101, 101) uint8, resized back to 101x101.

    Returns (crop images (M, 101, 101) uint8, crop masks (M, 101, 101) uint8, sources (M, 3) int64:
    index into `images`, corner, side). The image is resized bilinearly, the mask by nearest (half-pixel
    centres, as the train augmentations resize masks). Source images are drawn uniformly from those that
    have at least one qualifying crop, then one of its qualifying (corner, side) pairs; the same
    (arrays, fraction, seed) give the same crops. UserError when no image has a qualifying crop.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    n = int(round(fraction * len(images)))
    empty = (np.zeros((0, SRC, SRC), np.uint8), np.zeros((0, SRC, SRC), np.uint8), np.zeros((0, 3), np.int64))
    if n == 0:
        return empty
    side_list = np.arange(sides[0], sides[1] + 1)
    counts = corner_counts(masks, side_list)
    ok = (counts >= salt_pixels[0]) & (counts <= salt_pixels[1])
    eligible = np.flatnonzero(ok.any(axis=(1, 2)))
    if not len(eligible):
        raise UserError(f"--small_crops: none of the {len(images)} training images has a corner crop of side "
                        f"{sides[0]}-{sides[1]} with {salt_pixels[0]}-{salt_pixels[1]} salt pixels; "
                        f"drop --small_crops")
    rng = np.random.default_rng(seed)
    src = rng.choice(eligible, n, replace=n > len(eligible))
    out_images = np.empty((n, SRC, SRC), np.uint8)
    out_masks = np.empty((n, SRC, SRC), np.uint8)
    sources = np.empty((n, 3), np.int64)
    for j, i in enumerate(src):
        pairs = np.argwhere(ok[i])  # (corner, side index)
        corner, s = pairs[rng.integers(len(pairs))]
        side = int(side_list[s])
        out_images[j] = cv2.resize(corner_crop(images[i], corner, side), (SRC, SRC), interpolation=cv2.INTER_LINEAR)
        out_masks[j] = cv2.resize(corner_crop((masks[i] > 0).astype(np.uint8), corner, side), (SRC, SRC),
                                  interpolation=MASK_NEAREST)
        sources[j] = (i, corner, side)
    return out_images, out_masks, sources


def with_small_crops(images, masks, fraction, seed):
    """The training arrays with the crops appended: (images, masks, weights (N + M,) float32, sources).

    weights: 1 for the real images, CROP_WEIGHT for the crops.
    """
    ci, cm, sources = small_mask_crops(images, masks, fraction, seed)
    weights = np.concatenate([np.ones(len(images), np.float32), np.full(len(ci), CROP_WEIGHT, np.float32)])
    return np.concatenate([images, ci]), np.concatenate([masks, cm]), weights, sources
