import numpy as np
import pytest

from utils.metric import (COVERAGE_BUCKETS, breakdown_table, coverage_breakdown, image_scores, mean_iou, score,
                          threshold_sweep)


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


def test_coverage_breakdown_equals_a_plain_loop():
    rng = np.random.default_rng(3)
    n = 300
    # Coverages on and around the bucket edges (0, 1 pixel, 10 %, 50 %, all) and random ones.
    edges = [0, 1, 1019, 1020, 1021, 5100, 5101, 10201]
    counts = np.concatenate([edges, rng.integers(0, 10202, n - len(edges))])
    true = np.zeros((n, 10201), bool)
    for k, c in enumerate(counts):
        true[k, rng.permutation(10201)[:c]] = True
    true = true.reshape(n, 101, 101)
    scores = rng.choice([0.0, 0.3, 0.7, 1.0], n)
    rows = coverage_breakdown(scores, true)
    assert [r['name'] for r in rows] == list(COVERAGE_BUCKETS)
    sums = {}
    for s, t in zip(scores, true):
        c = t.sum() / t.size
        name = 'empty' if c == 0 else '<10 %' if c < 0.1 else '10-50 %' if c <= 0.5 else '>50 %'
        sums[name] = sums.get(name, []) + [s]
    total_lost = sum(1 - s for s in scores)
    for r in rows:
        mine = sums.get(r['name'], [])
        assert r['images'] == len(mine)
        assert r['score'] == pytest.approx(sum(mine) / len(mine))
        assert r['lost'] == pytest.approx(sum(1 - s for s in mine) / total_lost)
    assert sum(r['images'] for r in rows) == n and sum(r['lost'] for r in rows) == pytest.approx(1.0)
    assert [rows[k]['images'] > 0 for k in range(4)] == [True] * 4
    # 10 % and 50 % of 10201 pixels are 1020.1 and 5100.5: 1020 and 5100 pixels fall below the edges, 1021 and 5101 above
    b = [next(r['name'] for r in coverage_breakdown([0.0], true[k:k + 1]) if r['images']) for k in range(len(edges))]
    assert b == ['empty', '<10 %', '<10 %', '<10 %', '10-50 %', '10-50 %', '>50 %', '>50 %']


def test_coverage_breakdown_without_loss_or_images():
    true = np.zeros((3, 101, 101), bool)
    rows = coverage_breakdown(np.ones(3), true)
    assert rows[0] == {'name': 'empty', 'images': 3, 'score': 1.0, 'lost': 0.0}
    assert all(r['images'] == 0 and r['score'] is None and r['lost'] == 0.0 for r in rows[1:])
    table = breakdown_table(rows).splitlines()
    assert len(table) == 5 and table[1].split()[:3] == ['empty', '3', '1.0000'] and table[2].split()[-2] == '-'
    # Exactly 10 % and 50 % belong to 10-50 %.
    small = np.zeros((4, 10, 10), bool)
    for k, c in enumerate((9, 10, 50, 51)):
        small[k].flat[:c] = True
    assert [r['images'] for r in coverage_breakdown(np.zeros(4), small)] == [0, 1, 2, 1]
