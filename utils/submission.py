"""Turning probability masks into the competition's submission CSV."""
import numpy as np
import pandas as pd

from utils.errors import UserError
from utils.io import save_csv
from utils.rle import rle_encode


def check_probs(probs, path, n_expected=None, expected_from='sample_submission.csv'):
    """Refuse probability arrays of the wrong shape or with NaN (checked in chunks, memory-mapped)."""
    if probs.ndim != 3 or probs.shape[1:] != (101, 101):
        raise UserError(f"{path} has shape {probs.shape}, not (N, 101, 101); pass raw masks saved by predict*.py")
    if n_expected is not None and len(probs) != n_expected:
        raise UserError(f"{path} has {len(probs)} masks but {expected_from} lists {n_expected} images; "
                        f"pass masks predicted for this data set")
    for a in range(0, len(probs), 2048):
        if not np.isfinite(probs[a:a + 2048]).all():
            raise UserError(f"{path} contains NaN or infinite values; predict it again")


def rle_column(probs, th):
    """rle strings of `probs` (N, 101, 101) thresholded at `th` (salt where prob > th)."""
    out = []
    for a in range(0, len(probs), 1024):
        out.extend(rle_encode(m) for m in np.asarray(probs[a:a + 1024]) > th)
    return out


def write_submission(path, ids, probs, th):
    """Write id,rle_mask in the order of `ids`; returns the share of non-empty masks."""
    rles = rle_column(probs, th)
    save_csv(path, pd.DataFrame({'id': ids, 'rle_mask': rles}))
    return float(np.mean([bool(r) for r in rles])) if rles else 0.0
