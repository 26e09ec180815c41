import numpy as np
import pytest

from utils.metric import image_scores, mean_iou, score, threshold_sweep


def masks_with(inter, a_only, b_only):
    """A truth and a prediction with exactly the given overlap counts."""
    t = np.zeros(10201, bool)
    p = np.zeros(10201, bool)
    t[:inter] = p[:inter] = True
    t[inter:inter + a_only] = True
    p[inter + a_only:inter + a_only + b_only] = True
    return p.reshape(101, 101), t.reshape(101, 101)


@pytest.mark.parametrize('inter,a_only,b_only,expected', [
    (11, 9, 0, 0.1),     # IoU 11/20 = 0.55 exactly: a hit only at 0.50
    (10, 10, 0, 0.0),    # IoU 0.5 exactly: no hit at all
    (20, 0, 0, 1.0),     # perfect
    (19, 1, 0, 0.9),     # IoU 0.95 exactly: hits at 0.50..0.90
    (3, 1, 0, 0.5),      # IoU 0.75: hits at 0.50..0.70
    (0, 5, 5, 0.0),      # disjoint
])
def test_hand_computed(inter, a_only, b_only, expected):
    p, t = masks_with(inter, a_only, b_only)
    assert image_scores(p[None], t[None])[0] == pytest.approx(expected, abs=1e-12)


def test_empty_cases():
    z = np.zeros((1, 101, 101), bool)
    o = z.copy()
    o[0, 0, 0] = True
    assert image_scores(z, z)[0] == 1.0
    assert image_scores(o, z)[0] == 0.0
    assert image_scores(z, o)[0] == 0.0


def test_mean_over_images():
    p1, t1 = masks_with(11, 9, 0)
    z = np.zeros((101, 101), bool)
    assert score(np.stack([p1, z]), np.stack([t1, z])) == pytest.approx((0.1 + 1.0) / 2)


def test_against_plain_definition():
    """Random masks against a direct transcription of the competition's definition."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = rng.random((101, 101)) < rng.choice([0, 0.01, 0.3, 0.9])
        p = t ^ (rng.random((101, 101)) < rng.choice([0, 0.01, 0.1, 0.5]))
        if rng.random() < 0.2:
            p[:] = False
        if t.sum() == 0 and p.sum() == 0:
            ref = 1.0
        elif t.sum() == 0 or p.sum() == 0:
            ref = 0.0
        else:
            iou = (t & p).sum() / (t | p).sum()
            ref = np.mean([iou > th for th in np.arange(0.5, 1.0, 0.05).round(2)])
        assert image_scores(p[None], t[None])[0] == pytest.approx(ref)


def test_threshold_sweep_equals_loop():
    rng = np.random.default_rng(1)
    true = rng.random((60, 101, 101)) < 0.3
    true[:20] = False
    probs = np.clip(true * 0.55 + rng.random(true.shape) * 0.5, 0, 1).astype(np.float16)
    ths = np.linspace(0, 1, 101)
    sweep = threshold_sweep(probs, true, ths)
    loop = np.array([score(probs > t, true) for t in ths])
    assert np.abs(sweep - loop).max() < 1e-12


def test_mean_iou():
    p, t = masks_with(3, 1, 0)
    assert mean_iou(p[None], t[None]) == pytest.approx(0.75)
