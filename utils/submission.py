"""Turning probability masks into the competition's submission CSV."""
import functools
from pathlib import Path

import cv2
import numpy as np

from utils.data import test_ids
from utils.errors import UserError
from utils.io import advice, atomic_paths, check_prediction_pair, load_npy, save_rows, write_csv_rows, write_npy
from utils.rle import rle_encode

# What to do when a submission or its probabilities cannot be written (utils.io.WriteError).
OUT_ADVICE = functools.partial(advice, space="free space there (the file there before is intact), or pass --out "
                                             "in another folder",
                               access="pass --out in a folder you can write to (the file there before is intact)")


def check_probs(probs, path, n_expected=None, expected_from='sample_submission.csv', scan=True):
    """Refuse probability arrays of the wrong type or shape or with NaN (checked in chunks, memory-mapped).

    scan=False checks the shape only, for callers that check the values as they read them.
    """
    if probs.dtype.kind not in 'biuf':
        raise UserError(f"{path} holds {probs.dtype} values, not probabilities; pass raw masks saved by predict*.py")
    if probs.ndim != 3 or probs.shape[1:] != (101, 101):
        raise UserError(f"{path} has shape {probs.shape}, not (N, 101, 101); pass raw masks saved by predict*.py")
    if n_expected is not None and len(probs) != n_expected:
        raise UserError(f"{path} has {len(probs)} masks but {expected_from} lists {n_expected} images; "
                        f"pass masks predicted for this data set")
    for a in range(0, len(probs) if scan else 0, 2048):
        if not np.isfinite(probs[a:a + 2048]).all():
            raise UserError(f"{path} contains NaN or infinite values; predict it again")


def out_of_range(probs, path):
    """The UserError for values of `probs` that are no probabilities (NaN, infinite, outside [0, 1]); None if all are."""
    x = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(x).all():
        return UserError(f"{path} contains NaN or infinite values; predict it again")
    if x.size and (x.min() < 0 or x.max() > 1):
        v = x.min() if x.min() < 0 else x.max()
        return UserError(f"{path} has values outside [0, 1] (e.g. {v:g}): not probabilities; pass raw masks saved by "
                         f"predict*.py")
    return None


def remove_small(mask, min_size):
    """Drop connected salt regions of fewer than `min_size` pixels from a binary mask (H, W)."""
    if min_size <= 0 or not mask.any():
        return mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_size
    return keep[labels]


def binarize(probs, th, min_size=0):
    """Binary masks (N, 101, 101) from probabilities: prob > th, small regions removed."""
    masks = np.asarray(probs) > th
    if min_size > 0:
        masks = np.stack([remove_small(m, min_size) for m in masks]) if len(masks) else masks
    return masks


def rle_column(probs, th, min_size=0):
    """rle strings of `probs` (N, 101, 101) thresholded at `th` (salt where prob > th)."""
    out = []
    for a in range(0, len(probs), 1024):
        out.extend(rle_encode(m) for m in binarize(probs[a:a + 1024], th, min_size))
    return out


def write_rles(path, ids, rles):
    """Write the CSV id,rle_mask (atomically, without pandas); returns the share of non-empty masks."""
    if len(ids) != len(rles):
        raise ValueError(f"{len(ids)} ids but {len(rles)} masks")
    save_rows(path, ['id', 'rle_mask'], zip(ids, rles))
    return float(np.mean([bool(r) for r in rles])) if rles else 0.0


def write_submission(path, ids, probs, th, min_size=0, empty=None):
    """Write id,rle_mask in the order of `ids`; returns the share of non-empty masks.

    empty: optional booleans (N,): these images get an empty mask whatever their probabilities.
    """
    rles = rle_column(probs, th, min_size)
    if empty is not None:
        rles = ['' if e else r for r, e in zip(rles, empty)]
    return write_rles(path, ids, rles)


def fold_average(masks, data_dir, out, th, min_size=0, save_probs=False):
    """Average raw probability files (each (N, 101, 101), sample_submission.csv order) into one submission.

    One pass over the memory-mapped files, a chunk at a time: sum, check for NaN/inf, average,
    encode. Only the rle strings (and, with save_probs, a float16 mean saved as out's .npy)
    outlive a chunk, and nothing is written before every chunk has passed. Returns the share of
    images with salt.
    """
    out = Path(out)
    if out.suffix != '.csv':
        raise UserError(f"--out {out} must end in .csv")
    ids = test_ids(data_dir)
    arrays = []
    for f in masks:
        a = load_npy(f, 'probability masks', 'python3 predict.py --snapshot ...', mmap=True)
        check_probs(a, f, len(ids), scan=False)
        arrays.append(a)
    chunk = 2048
    acc = np.empty((min(chunk, len(ids)), 101, 101), np.float32)
    mean16 = np.empty((len(ids), 101, 101), np.float16) if save_probs else None
    rles = []
    for a in range(0, len(ids), chunk):
        s = acc[:min(chunk, len(ids) - a)]
        with np.errstate(over='ignore', invalid='ignore'):  # judged below, in one line, not as warnings
            np.copyto(s, arrays[0][a:a + chunk])
            for x in arrays[1:]:
                np.add(s, x[a:a + chunk], out=s)
            # Probabilities in [0, 1] sum to [0, len(arrays)]; NaN, inf, values beyond float32 (inf by now)
            # and logits do not. As cheap as a NaN check; only on failure is each file read again, in
            # float64, to name the one at fault. (Values outside [0, 1] that other files make up for at
            # the same pixel go unnoticed.)
            ok = s.min() >= 0 and s.max() <= len(arrays)
        if not ok:
            raise next((e for f, x in zip(masks, arrays) if (e := out_of_range(x[a:a + chunk], f))),
                       UserError(f"the sum of {', '.join(map(str, masks))} is outside [0, {len(arrays)}]; pass raw "
                                 f"masks saved by predict*.py"))
        np.divide(s, len(arrays), out=s)
        rles.extend(rle_column(s, th, min_size))
        if mean16 is not None:
            mean16[a:a + len(s)] = s
    arrays = {} if mean16 is None else {out.with_suffix('.npy'): mean16}
    return save_together(out, ids, rles, arrays)


def save_together(out, ids, rles, arrays):
    """Write the submission `out` (id,rle_mask) and the arrays {path: array} that go with it as one: every
    path is checked first, and a failure (or SIGTERM) leaves none of them new. Returns the share of
    non-empty masks."""
    if len(ids) != len(rles):
        raise ValueError(f"{len(ids)} ids but {len(rles)} masks")
    paths = [*arrays, out]
    if Path(out).with_suffix('.npy') in map(Path, arrays):
        check_prediction_pair(out)
    with OUT_ADVICE(), atomic_paths(paths) as tmps:
        for tmp, arr in zip(tmps, arrays.values()):
            write_npy(tmp, arr)
        write_csv_rows(tmps[-1], ['id', 'rle_mask'], zip(ids, rles))
    return float(np.mean([bool(r) for r in rles])) if rles else 0.0


def save_prediction(out, ids, probs, th, extra=None, min_size=0, empty=None):
    """Save raw probabilities (out's .npy, and out.<key>.npy for each of `extra`) and the submission CSV
    `out` (the images flagged in `empty` with an empty mask); print where they are and return out."""
    out = Path(out)
    if out.suffix != '.csv':
        raise UserError(f"--out {out} must end in .csv")
    check_probs(probs, out.with_suffix('.npy'), len(ids))  # NaN would be an all-empty submission
    rles = rle_column(probs, th, min_size)
    if empty is not None:
        rles = ['' if e else r for r, e in zip(rles, empty)]
    arrays = {out.with_suffix('.npy'): probs}
    arrays.update({out.with_name(out.stem + f'.{key}.npy'): arr for key, arr in (extra or {}).items()})
    share = save_together(out, ids, rles, arrays)
    print(f"raw probabilities: {out.with_suffix('.npy')}")
    if empty is not None:
        print(f"emptied {int(np.sum(empty))} of {len(ids)} masks whose salt probability is below --empty_below")
    print(f"submission: {out} ({len(ids)} images, {share:.1%} with salt at threshold {th})")
    return out

