"""The epoch line's score at the best of a coarse threshold grid (net.loop.threshold_peak)."""
import numpy as np

from net.loop import EPOCH_THRESHOLDS, threshold_peak
from utils.metric import score, threshold_image_scores, threshold_sweep


def _masks(n=12, side=16, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), np.uint8)
    for i in range(0, n, 2):  # every other image empty
        r, c = rng.integers(0, side // 2, size=2)
        masks[i, r:r + side // 2, c:c + side // 2] = 1
    return masks


def test_under_confident_masks_score_at_a_lower_threshold():
    masks = _masks()
    # The salt pixels are all at 0.35, the rest at 0.1: nothing passes 0.5, everything is right at 0.1-0.3.
    probs = np.where(masks == 1, 0.35, 0.1).astype(np.float16)
    at_half = score(probs > 0.5, masks)
    th, best = threshold_peak(probs, masks)
    assert at_half == 0.5  # the all-empty answer: only the empty half of the images
    assert best == 1.0 and 0.1 <= th < 0.35
    assert th == EPOCH_THRESHOLDS[np.searchsorted(EPOCH_THRESHOLDS, 0.1)]  # ties go to the lowest threshold


def test_peak_is_never_below_the_score_at_one_half():
    masks = _masks(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        probs = np.clip(masks * rng.uniform(0.2, 0.9) + rng.normal(0, 0.2, masks.shape), 0, 1).astype(np.float32)
        th, best = threshold_peak(probs, masks)
        assert 0.5 in EPOCH_THRESHOLDS
        assert best >= score(probs > 0.5, masks) - 1e-12
        assert best == max(score(probs > t, masks) for t in EPOCH_THRESHOLDS)
        assert th in EPOCH_THRESHOLDS


def test_probabilities_on_the_grid_match_the_general_search():
    # float16 and float32 values exactly on a threshold (0.25, 0.5, 0.75) or nearest to one (0.05, 0.95):
    # "salt" means prob > t, so a pixel at exactly 0.5 is not salt at 0.5.
    masks = _masks(n=16, side=12, seed=5)
    rng = np.random.default_rng(2)
    for dtype in (np.float16, np.float32):
        probs = rng.choice(np.array([0.0, 0.05, 0.25, 0.3, 0.5, 0.55, 0.75, 0.95, 1.0], dtype), size=masks.shape)
        probs = np.where(masks == 1, np.maximum(probs, dtype(0.5)), probs * dtype(0.6)).astype(dtype)
        ref = threshold_sweep(probs, masks, EPOCH_THRESHOLDS)
        np.testing.assert_array_equal(ref, [score(probs > t, masks) for t in EPOCH_THRESHOLDS])
        th, best = threshold_peak(probs, masks)
        assert best == ref.max() and th == EPOCH_THRESHOLDS[int(np.argmax(ref))]
        assert best == max(score(probs > t, masks) for t in EPOCH_THRESHOLDS)


def test_a_nan_probability_counts_as_empty():
    masks = _masks(n=4, side=8)
    probs = np.where(masks == 1, 0.9, 0.0).astype(np.float32)
    probs[1, 0, 0] = np.nan  # an empty image: nan as 0 keeps it empty
    assert threshold_peak(probs, masks) == (0.05, 1.0)


def test_float16_look_up_matches_the_comparison_at_any_thresholds():
    # The float16 path bins by a table of all 65536 values; it must equal prob > t pixel by pixel,
    # for thresholds on, between and beside float16 values, and for NaN, inf and negative values.
    masks = _masks(n=10, side=10, seed=7)
    rng = np.random.default_rng(4)
    probs = rng.random(masks.shape).astype(np.float16)
    probs.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.5, np.float16(0.5) + np.float16(0.0005)]
    for thresholds in (np.linspace(0.3, 0.7, 41), np.array([0.1, np.float16(0.5).item(), 0.50024414]),
                       np.array([np.nextafter(0.5, 1), 0.9])):
        got = threshold_image_scores(probs, masks, thresholds)
        want = np.stack([threshold_image_scores((probs.astype(np.float64) > t).astype(np.float64) * 2 - 0.5,
                                                masks, [0.0])[:, 0] for t in thresholds], 1)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, threshold_image_scores(probs.astype(np.float32), masks, thresholds))
