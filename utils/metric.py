"""The competition's score: mean average precision over IoU thresholds 0.50, 0.55, ..., 0.95.

Per image there is at most one object (the salt), so precision at threshold t is 1 when
IoU > t (strictly), else 0; an empty truth with an empty prediction scores 1 and exactly one
of them empty scores 0. The image's score is the mean over the ten thresholds; the data set's
score is the mean over images. Comparisons are done in integers (20*I > k*U) so that an IoU
exactly on a threshold (11/20 at 0.55, say) is never a hit by rounding luck.
"""
import functools

import numpy as np

IOU_STEPS = np.arange(10, 20)  # thresholds k/20: 0.50 ... 0.95


def image_scores_from_counts(inter, union, n_true, n_pred):
    """Per-image scores from pixel counts; all arguments are integer arrays of the same shape."""
    inter, union = np.asarray(inter, np.int64), np.asarray(union, np.int64)
    hits = (20 * inter[..., None] > IOU_STEPS * union[..., None]).mean(axis=-1)
    both_empty = (np.asarray(n_true) == 0) & (np.asarray(n_pred) == 0)
    return np.where(both_empty, 1.0, hits)


def image_scores(pred, true):
    """Per-image scores (N,) of binary predictions and truths, each (N, H, W), non-zero = salt."""
    pred = np.asarray(pred).reshape(len(pred), -1) != 0
    true = np.asarray(true).reshape(len(true), -1) != 0
    inter = (pred & true).sum(1)
    n_pred, n_true = pred.sum(1), true.sum(1)
    return image_scores_from_counts(inter, n_pred + n_true - inter, n_true, n_pred)


def score(pred, true):
    """The competition's score of binary predictions against truths, each (N, H, W)."""
    return float(image_scores(pred, true).mean()) if len(true) else 0.0


def mean_iou(pred, true):
    """Mean per-image IoU (N, H, W) inputs; an image where both are empty counts as 1."""
    pred = np.asarray(pred).reshape(len(pred), -1) != 0
    true = np.asarray(true).reshape(len(true), -1) != 0
    inter = (pred & true).sum(1)
    union = (pred | true).sum(1)
    return float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean())


def threshold_sweep(probs, true, thresholds):
    """Scores at every probability threshold in one pass over the pixels (see threshold_image_scores)."""
    return threshold_image_scores(probs, true, thresholds).mean(0)


def threshold_image_scores(probs, true, thresholds):
    """Per-image scores (N, len(thresholds)) at every probability threshold, in one pass over the pixels.

    probs: (N, H, W) floats; true: (N, H, W) binary; thresholds: sorted 1-D array. A pixel is
    predicted salt at threshold t when prob > t (so a NaN is never salt). Each pixel is binned by
    how many thresholds lie below its probability, and its bin is offset by its image and its
    truth, so that one bincount gives every image's counts; their cumulative sums give, for every
    threshold at once, the predicted area and its overlap with the truth. The mean over axis 0 is
    the score of the whole set at each threshold; the mean over a subset of rows, that subset's.
    float16 probabilities (what validation and predict save) are binned by a look-up of their bits.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n = len(probs)
    k = len(thresholds)
    flat = np.asarray(probs).reshape(n, -1)
    truth = np.asarray(true).reshape(n, -1) != 0
    out_inter = np.empty((n, k), np.int64)
    out_pred = np.empty((n, k), np.int64)
    # Chunks keep the temporary bin arrays small for large validation sets.
    step = max(1, 4_000_000 // max(flat.shape[1], 1))
    for a in range(0, n, step):
        bins = threshold_bins(flat[a:a + step], thresholds)
        m = len(bins)
        bins += truth[a:a + m] * np.int32(k + 1)
        bins += (np.arange(m, dtype=np.int32) * np.int32(2 * (k + 1)))[:, None]
        counts = np.bincount(bins.ravel(), minlength=m * 2 * (k + 1)).reshape(m, 2, k + 1)
        # Predicted at threshold j: pixels whose bin is > j, a reversed cumulative sum.
        above = np.cumsum(counts[:, :, ::-1], axis=2)[:, :, ::-1][:, :, 1:]
        out_inter[a:a + m] = above[:, 1]
        out_pred[a:a + m] = above[:, 0] + above[:, 1]
    n_true = truth.sum(1)[:, None]
    union = out_pred + n_true - out_inter
    return image_scores_from_counts(out_inter, union, np.broadcast_to(n_true, union.shape), out_pred)


def threshold_bins(probs, thresholds):
    """int32 array of how many of the sorted float64 `thresholds` lie strictly below each probability; NaN: 0."""
    probs = np.asarray(probs)
    if probs.dtype == np.float16:
        return _float16_bins(thresholds.tobytes())[probs.view(np.uint16)]
    p = probs.astype(np.float64)
    bins = np.searchsorted(thresholds, p, side='left').astype(np.int32)
    bins[np.isnan(p)] = 0
    return bins


@functools.lru_cache(maxsize=8)
def _float16_bins(thresholds):
    """threshold_bins of every float16 value, indexed by its 16 bits (thresholds as float64 bytes)."""
    every = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    return threshold_bins(every.astype(np.float64), np.frombuffer(thresholds, np.float64))


# Buckets of the salt coverage c of the true mask (salt pixels / all pixels).
COVERAGE_BUCKETS = ('empty', '<10 %', '10-50 %', '>50 %')


def coverage_bucket(true):
    """Index into COVERAGE_BUCKETS of each true mask (N, H, W): c = 0, 0 < c < 0.1, 0.1 <= c <= 0.5, c > 0.5."""
    true = np.asarray(true).reshape(len(true), -1) != 0
    c = true.mean(1) if true.shape[1] else np.zeros(len(true))
    return np.select([c == 0, c < 0.1, c <= 0.5], [0, 1, 2], 3)


def coverage_breakdown(scores, true):
    """The score broken down by the salt coverage of the true masks.

    scores: per-image scores (N,) (image_scores); true: (N, H, W) binary. Returns one dict per
    bucket of COVERAGE_BUCKETS, in order: name, images, score (the bucket's mean, None when it has
    no image) and lost: the bucket's share of the score lost over all images, sum(1 - score) of
    the bucket over that of all (0 when nothing is lost).
    """
    scores = np.asarray(scores, np.float64)
    bucket = coverage_bucket(true)
    lost = 1.0 - scores
    total_lost = lost.sum()
    rows = []
    for k, name in enumerate(COVERAGE_BUCKETS):
        inside = bucket == k
        n = int(inside.sum())
        rows.append({'name': name, 'images': n, 'score': float(scores[inside].mean()) if n else None,
                     'lost': float(lost[inside].sum() / total_lost) if total_lost > 0 else 0.0})
    return rows


def breakdown_table(rows):
    """coverage_breakdown's rows as a small text table (one line per bucket, with a header)."""
    lines = [f"{'coverage':<9} {'images':>6}  {'score':>6}  {'share of lost score':>19}"]
    for r in rows:
        s = f"{r['score']:.4f}" if r['score'] is not None else '-'
        lines.append(f"{r['name']:<9} {r['images']:>6}  {s:>6}  {r['lost']:>18.1%}")
    return '\n'.join(lines)
