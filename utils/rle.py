"""Run-length encoding of masks, as the competition defines it.

Pixels are numbered 1.. in column-major order (top to bottom, then left to right); a mask is
written as "start length start length ...", and an empty mask as an empty string.
"""
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

    Raises ValueError on a malformed string (odd count, non-numbers, runs outside the image,
    runs out of order or overlapping).
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        rle = ''
    rle = str(rle).strip()
    size = shape[0] * shape[1]
    flat = np.zeros(size, dtype=np.uint8)
    if not rle:
        return flat.reshape(shape, order='F')
    try:
        nums = np.array(rle.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"rle has a token that is not an integer: {rle[:40]!r}") from None
    if nums.size % 2:
        raise ValueError("rle has an odd number of values (it must be start/length pairs)")
    starts, lengths = nums[0::2] - 1, nums[1::2]
    ends = starts + lengths
    if (starts < 0).any() or (lengths <= 0).any() or (ends > size).any():
        raise ValueError(f"rle has a run outside the {shape[0]}x{shape[1]} image or of length <= 0")
    if (starts[1:] < ends[:-1]).any():
        raise ValueError("rle runs overlap or are out of order")
    for s, e in zip(starts.tolist(), ends.tolist()):
        flat[s:e] = 1
    return flat.reshape(shape, order='F')
