"""Run-length encoding of masks, as the competition defines it.

Pixels are numbered 1.. in column-major order (top to bottom, then left to right); a mask is
written as "start length start length ...", and an empty mask as an empty string.
"""
import re

import numpy as np

SHAPE = (101, 101)


def rle_encode(mask):
    """Encode one mask (H, W), any dtype, non-zero = salt, as the competition's rle string."""
    pixels = np.asarray(mask).ravel(order='F') != 0
    # Pad with background on both sides so that every run has a rising and a falling edge.
    padded = np.concatenate(([False], pixels, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    if edges.size == 0:
        return ''
    starts = edges[0::2] + 1
    lengths = edges[1::2] - edges[0::2]
    runs = np.empty(edges.size, dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = lengths
    return ' '.join(map(str, runs.tolist()))


def rle_decode(rle, shape=SHAPE):
    """Decode an rle string into a uint8 mask of `shape` with values 0 and 1.

    The one place where rle text is checked, strictly: ASCII digits separated by single spaces
    (spaces around the whole are dropped), an even count, every run of length >= 1 inside the
    image, each starting after the previous one ends. Anything else is a ValueError that says
    what is wrong; NaN or None (an empty CSV cell) is the empty mask.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ''
    rle = str(rle).strip(' ')
    size = shape[0] * shape[1]
    flat = np.zeros(size, dtype=np.uint8)
    if not rle:
        return flat.reshape(shape, order='F')
    if not _RLE.fullmatch(rle):
        bad = next((t for t in rle.split(' ') if not (t.isascii() and t.isdigit())), None)
        what = f"a token that is not a whole number: {bad[:20]!r}" if bad else "values not separated by single spaces"
        raise ValueError(f"rle has {what}")
    tokens = rle.split(' ')
    if len(tokens) % 2:
        raise ValueError(f"rle has an odd number of values ({len(tokens)}); it must be start/length pairs")
    # Python ints first: a 20-digit token must be "outside the image", not an int64 overflow.
    limit = size + 1
    nums = [min(int(t), limit) if len(t) < 12 else limit for t in tokens]
    starts, lengths = np.array(nums[0::2], np.int64) - 1, np.array(nums[1::2], np.int64)
    ends = starts + lengths
    if (starts < 0).any() or (lengths <= 0).any() or (ends > size).any():
        k = int(np.flatnonzero((starts < 0) | (lengths <= 0) | (ends > size))[0])
        raise ValueError(f"rle run {tokens[2 * k]} {tokens[2 * k + 1]} is outside the {shape[0]}x{shape[1]} image "
                         f"(pixels 1..{size}) or has length 0")
    if (starts[1:] < ends[:-1]).any():
        k = int(np.flatnonzero(starts[1:] < ends[:-1])[0]) + 1
        raise ValueError(f"rle run {tokens[2 * k]} {tokens[2 * k + 1]} starts before the previous run ends "
                         f"(runs overlap or are out of order)")
    for s, e in zip(starts.tolist(), ends.tolist()):
        flat[s:e] = 1
    return flat.reshape(shape, order='F')


_RLE = re.compile(r'[0-9]+(?: [0-9]+)*')
