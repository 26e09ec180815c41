"""Inputs generated, not listed (hypothesis): rle round trips, the metric against a plain loop, and
evaluate.py / predict_fold_avg.py on malformed files: one line and exit status 2, or the right answer,
never a traceback or a wrong score."""
import re
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from test_errors import visible_lines
from utils.rle import rle_decode, rle_encode

SIZE = 101 * 101
FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=6, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # capsys: read per example


# ---------------------------------------------------------------- masks as runs

@st.composite
def runs(draw, max_runs=8, min_runs=0):
    """Sorted, separate runs [(a, b)] of pixels a..b-1 (0-based, column-major): at both ends, single pixels, anything."""
    n = draw(st.integers(min_runs, max_runs))
    edges = sorted(draw(st.lists(st.integers(0, SIZE), min_size=2 * n, max_size=2 * n, unique=True)))
    return [(edges[2 * k], edges[2 * k + 1]) for k in range(n)]


def mask_of(run_list):
    flat = np.zeros(SIZE, np.uint8)
    for a, b in run_list:
        flat[a:b] = 1
    return flat.reshape(101, 101, order='F')


def text_of(run_list):
    return ' '.join(f'{a + 1} {b - a}' for a, b in run_list)


ENDS = [[], [(0, SIZE)], [(0, 1)], [(SIZE - 1, SIZE)], [(0, 1), (SIZE - 1, SIZE)], [(1, SIZE - 1)], [(0, 101), (202, 303)]]


@FAST
@given(runs())
@example([]).via('empty')
@example([(0, SIZE)]).via('full')
@example([(0, 1)]).via('first pixel')
@example([(SIZE - 1, SIZE)]).via('last pixel')
@example([(0, 1), (SIZE - 1, SIZE)]).via('both ends')
def test_rle_round_trip_of_runs(run_list):
    m = mask_of(run_list)
    assert rle_encode(m) == text_of(run_list)
    assert np.array_equal(rle_decode(text_of(run_list)), m)


@FAST
@given(hnp.arrays(np.bool_, (101, 101)))
def test_rle_round_trip_of_any_mask(m):
    text = rle_encode(m)
    assert re.fullmatch(r'(\d+ \d+( \d+ \d+)*)?', text)
    assert np.array_equal(rle_decode(text), m.astype(np.uint8))


def plain_decode(text):
    """The format, read the long way: 'start length ...' in ASCII digits and single spaces, each run inside
    the image, after the previous one. None for anything else."""
    text = text.strip(' ')
    flat = [0] * SIZE
    if text:
        if not re.fullmatch(r'[0-9]+( [0-9]+)*', text):
            return None
        nums = [int(t) for t in text.split(' ')]
        if len(nums) % 2:
            return None
        end = 0
        for start, length in zip(nums[0::2], nums[1::2]):
            if start < 1 or length < 1 or start - 1 < end or start - 1 + length > SIZE:
                return None
            for k in range(start - 1, start - 1 + length):
                flat[k] = 1
            end = start - 1 + length
    return np.array(flat, np.uint8).reshape(101, 101, order='F')


TOKENS = st.one_of(st.integers(-5, 2 * SIZE).map(str), st.integers(0, 10 ** 30).map(str),
                   st.sampled_from(['1.5', '1e3', '+5', '-0', '٣', '５', '0x10', 'nan', 'inf', '', ' ', '\t', '1_0']),
                   st.text(max_size=3))


@FAST
@given(st.lists(TOKENS, max_size=8).map(' '.join) | st.text(max_size=20))
@example('99999999999999999999 1').via('past int64')
@example('9223372036854775807 9223372036854775807').via('int64 wraps around')
@example('+5 2').via('sign')
@example('٣ 2').via('non-ASCII digit')
@example('1\t5').via('tab')
def test_rle_decode_accepts_exactly_the_format(text):
    """Anything rle_decode accepts is well-formed and means what the format says; the rest is a ValueError."""
    want = plain_decode(text)
    if want is None:
        with pytest.raises(ValueError):
            rle_decode(text)
    else:
        assert np.array_equal(rle_decode(text), want)


DEFECTS = ['odd', 'overlap', 'descending', 'past end', 'zero length', 'start 0', 'not a number', 'huge']


@st.composite
def malformed(draw, kind):
    """A well-formed rle with one defect of `kind`: (kind, text)."""
    rl = draw(runs(max_runs=5, min_runs={'descending': 2, 'odd': 1, 'overlap': 1, 'zero length': 1}.get(kind, 0)))
    nums = [x for a, b in rl for x in (a + 1, b - a)]
    if kind == 'odd':
        nums = nums[:-1] if draw(st.booleans()) else nums + [draw(st.integers(1, SIZE))]
    elif kind == 'overlap':
        k = draw(st.integers(0, len(rl) - 1))
        a, b = rl[k]
        start = draw(st.integers(a, b - 1)) + 1  # starts inside run k
        nums = nums[:2 * k + 2] + [start, draw(st.integers(1, SIZE - start + 1))] + nums[2 * k + 2:]
    elif kind == 'descending':
        k = draw(st.integers(0, len(rl) - 2))
        nums[2 * k:2 * k + 4] = nums[2 * k + 2:2 * k + 4] + nums[2 * k:2 * k + 2]
    elif kind == 'past end':  # a last run that starts after the others and ends beyond pixel 10201
        start = draw(st.integers(rl[-1][1] + 1 if rl else 1, SIZE + 5))
        nums = nums + [start, draw(st.integers(max(1, SIZE - start + 2), SIZE + 10))]
    elif kind == 'zero length':
        nums[2 * draw(st.integers(0, len(rl) - 1)) + 1] = 0
    elif kind == 'start 0':
        nums = [0, draw(st.integers(1, 5))] + ([x for a, b in rl if a > 6 for x in (a + 1, b - a)])
    tokens = [str(x) for x in nums]
    if kind == 'not a number':
        bad = draw(st.sampled_from(['1.5', '1e3', '+5', '-1', '٣', 'x', '0x1', 'nan']))
        k = draw(st.integers(0, len(tokens)))
        tokens = tokens[:k] + [bad] + tokens[k:]
        if len(tokens) % 2:
            tokens.append('1')
    if kind == 'huge':
        k = draw(st.integers(0, len(tokens)))
        tokens = tokens[:k] + [str(draw(st.integers(2 ** 63 - 1, 10 ** 30))), '1'] + tokens[k:]
    return kind, ' '.join(tokens)


@pytest.mark.parametrize('kind', DEFECTS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_rle_decode_rejects_every_defect(kind, data):
    kind, text = data.draw(malformed(kind))
    assert plain_decode(text) is None, (kind, text)  # the generator made a real defect
    with pytest.raises(ValueError):
        rle_decode(text)


# ---------------------------------------------------------------- the metric

def plain_score(preds, trues):
    """The competition's definition, image by image, in exact fractions."""
    total = Fraction(0)
    for p, t in zip(preds, trues):
        P, T = set(np.flatnonzero(p).tolist()), set(np.flatnonzero(t).tolist())
        if not P and not T:
            total += 1
        elif P and T:
            iou = Fraction(len(P & T), len(P | T))
            total += Fraction(sum(iou > Fraction(k, 20) for k in range(10, 20)), 10)
    return total / len(preds)


@st.composite
def pairs(draw):
    """(prediction, truth): independent, or the truth with a few runs flipped (IoUs near the thresholds)."""
    t = mask_of(draw(runs()))
    if draw(st.booleans()):
        return mask_of(draw(runs())), t
    flip = mask_of(draw(runs(max_runs=3)))
    return (t ^ flip).astype(bool), t


@FAST
@given(st.lists(pairs(), min_size=1, max_size=6))
def test_metric_equals_a_plain_loop(items):
    from utils.metric import image_scores, score
    preds, trues = np.stack([p for p, _ in items]), np.stack([t for _, t in items])
    assert score(preds, trues) == pytest.approx(float(plain_score(preds, trues)), abs=1e-12)
    for k in range(len(items)):
        assert image_scores(preds[k:k + 1], trues[k:k + 1])[0] == pytest.approx(float(plain_score(preds[k:k + 1], trues[k:k + 1])),
                                                                               abs=1e-12)


def test_metric_exact_threshold_examples():
    """IoU exactly on a threshold is no hit: 11/20 = 0.55 hits at 0.50 only."""
    t = mask_of([(0, 20)])
    p = mask_of([(0, 11)])
    assert float(plain_score(p[None], t[None])) == pytest.approx(0.1)


# ---------------------------------------------------------------- running a script in-process

def run_main(prog, main, argv, capsys):
    """(exit status, stderr lines, return value) of main(argv) run as its script runs it (run_cli)."""
    from utils.errors import run_cli
    old = sys.argv
    sys.argv = [prog, *map(str, argv)]
    code, value = 0, None
    try:
        value = run_cli(main, [str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    return code, visible_lines(err), value


def assert_refused(code, lines, prog):
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f'{prog}: error: '), (code, lines)


# ---------------------------------------------------------------- evaluate.py

def csv_text(header, rows):
    return '\n'.join([header] + [','.join(r) for r in rows]) + '\n'


GOOD = ['as is', 'rows shuffled', 'extra id in the submission', 'columns swapped', 'extra column', 'quoted cells']
BAD = ['odd count', 'overlapping runs', 'descending runs', 'run past 10201', 'not a number', 'duplicate id',
       'duplicate id in the truth', 'missing id', 'header differs', 'no header', 'row without its rle field',
       'row with an extra field', 'truth without rows', 'bad rle in the truth', 'empty id']


@st.composite
def evaluate_case(draw, case):
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(st.text('0123456789abcdef', min_size=10, max_size=10), min_size=n, max_size=n, unique=True))
    true = [draw(runs(4)) for _ in ids]
    pred = [draw(runs(4)) if draw(st.booleans()) else t for t in true]
    truth_rows = [[i, text_of(t)] for i, t in zip(ids, true)]
    sub_rows = [[i, text_of(p)] for i, p in zip(ids, pred)]
    sub_header, truth_header = 'id,rle_mask', 'id,rle_mask'
    k = draw(st.integers(0, n - 1))
    bad_rle = {'odd count': text_of(pred[k]) + ' 7' if pred[k] else '5', 'overlapping runs': '10 5 12 3',
               'descending runs': '500 2 10 3', 'run past 10201': f'{SIZE - 3} 5', 'not a number': '1 2.5'}
    if case == 'rows shuffled':
        sub_rows = draw(st.permutations(sub_rows))
    elif case == 'extra id in the submission':
        sub_rows = sub_rows + [['ffffffffff0', '1 1']]
    elif case == 'columns swapped':
        sub_header, sub_rows = 'rle_mask,id', [[r, i] for i, r in sub_rows]
    elif case == 'extra column':
        sub_header, sub_rows = 'id,rle_mask,note', [[i, r, 'x'] for i, r in sub_rows]
    elif case == 'quoted cells':
        sub_rows = [[f'"{i}"', f'"{r}"'] for i, r in sub_rows]
    elif case in bad_rle:
        sub_rows[k] = [sub_rows[k][0], bad_rle[case]]
    elif case == 'duplicate id':
        sub_rows = sub_rows + [sub_rows[k]]
    elif case == 'duplicate id in the truth':
        truth_rows = truth_rows + [truth_rows[k]]
    elif case == 'missing id':
        sub_rows = sub_rows[:k] + sub_rows[k + 1:]
    elif case == 'header differs':
        sub_header = draw(st.sampled_from(['id,rle', 'ID,rle_mask', 'id;rle_mask', 'img,rle_mask', 'id, rle_mask']))
    elif case == 'no header':
        sub_header = ','.join(sub_rows[0])
        sub_rows = sub_rows[1:]
    elif case == 'row without its rle field':
        sub_rows[k] = [sub_rows[k][0]]
    elif case == 'row with an extra field':
        sub_rows[k] = sub_rows[k] + ['3']
    elif case == 'truth without rows':
        truth_rows = []
    elif case == 'bad rle in the truth':
        truth_rows[k] = [truth_rows[k][0], '3 0']
    elif case == 'empty id':
        sub_rows[k] = ['', sub_rows[k][1]]
        truth_rows[k] = ['', truth_rows[k][1]]
    return case, csv_text(sub_header, sub_rows), csv_text(truth_header, truth_rows), \
        np.stack([mask_of(p) for p in pred]), np.stack([mask_of(t) for t in true])


@pytest.mark.parametrize('kind', GOOD + BAD)
@SLOW
@given(data=st.data())
def test_evaluate_scores_right_or_refuses(capsys, kind, data):
    from tools.evaluate import main
    kind, sub_text, truth_text, pred, true = data.draw(evaluate_case(kind))
    with tempfile.TemporaryDirectory() as d:
        sub, truth = Path(d) / 'sub.csv', Path(d) / 'truth.csv'
        sub.write_text(sub_text)
        truth.write_text(truth_text)
        code, lines, value = run_main('evaluate.py', main, ['--submission', sub, '--truth', truth], capsys)
        assert sorted(p.name for p in Path(d).iterdir()) == ['sub.csv', 'truth.csv']
    if kind in GOOD:
        assert code == 0, (kind, lines)
        assert value == pytest.approx(float(plain_score(pred, true)), abs=1e-12), kind
    else:
        assert_refused(code, lines, 'evaluate.py')


# ---------------------------------------------------------------- predict_fold_avg.py

FOLD_GOOD = ['float16', 'float32', 'float64', 'uint8 0/1', 'bool', 'several files']
FOLD_BAD = ['NaN', 'inf', '-inf', 'beyond float32', 'far above 1', 'below 0', 'logits', 'complex', 'text',
            'truncated file', 'not an array', 'wrong shape', 'one mask short', 'duplicate id', 'header differs',
            'sample without rows']


@st.composite
def fold_avg_case(draw, case):
    n = draw(st.integers(2 if case == 'duplicate id' else 1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    probs = [rng.random((n, 101, 101)).astype(np.float32) for _ in range(draw(st.integers(1, 3)))]
    ids = [f'{k:010x}' for k in range(n)]
    header = 'id,rle_mask'
    where = (draw(st.integers(0, len(probs) - 1)), draw(st.integers(0, n - 1)), draw(st.integers(0, 100)),
             draw(st.integers(0, 100)))
    arrays = [p.astype(np.float16) for p in probs]
    raw = None  # bytes to write instead of an array
    if case in ('float32', 'float64'):
        arrays = [p.astype(case) for p in probs]
    elif case == 'uint8 0/1':
        arrays = [(p > 0.5).astype(np.uint8) for p in probs]
    elif case == 'bool':
        arrays = [p > 0.5 for p in probs]
    elif case == 'several files':
        arrays = [p.astype(np.float16) for p in probs] * 2
    elif case in ('NaN', 'inf', '-inf', 'beyond float32', 'far above 1', 'below 0'):
        # 'far above 1': enough to lift the average above 1 whatever the other files hold there
        value = {'NaN': np.nan, 'inf': np.inf, '-inf': -np.inf, 'beyond float32': 1e39, 'far above 1': len(probs) + 0.5,
                 'below 0': -draw(st.floats(1e-6, 1e6))}[case]
        arrays = [p.astype(np.float64) for p in probs]
        if case == 'below 0':  # the other files add nothing there
            for p in arrays:
                p[where[1:]] = 0
        arrays[where[0]][where[1:]] = value
    elif case == 'logits':  # a file of logits instead of probabilities
        arrays[where[0]] = (rng.standard_normal((n, 101, 101)) * 4).astype(np.float16)
    elif case == 'complex':
        arrays[where[0]] = arrays[where[0]].astype(np.complex64)
    elif case == 'text':
        arrays[where[0]] = np.full((n, 101, 101), '0.5')
    elif case == 'wrong shape':
        arrays[where[0]] = arrays[where[0]][:, :100]
    elif case == 'one mask short':
        arrays[where[0]] = arrays[where[0]][:-1]
    elif case == 'duplicate id':
        ids[where[1]] = ids[(where[1] + 1) % n]
    elif case == 'header differs':
        header = draw(st.sampled_from(['Id,rle_mask', 'image,rle_mask', 'rle_mask']))
    elif case == 'sample without rows':
        ids = []
    elif case in ('truncated file', 'not an array'):
        raw = draw(st.integers(0, 101 * 101 * 2 * n + 127)) if case == 'truncated file' else None
    return case, ids, header, arrays, raw, where[0]


def expected_submission(arrays, ids, th=0.5):
    mean = sum(a.astype(np.float32) for a in arrays) / len(arrays)
    return 'id,rle_mask\n' + ''.join(f'{i},{rle_encode(m > th)}\n' for i, m in zip(ids, mean))


@pytest.mark.parametrize('kind', FOLD_GOOD + FOLD_BAD)
@SLOW
@given(data=st.data())
def test_fold_avg_writes_right_or_refuses(capsys, kind, data):
    import predict_fold_avg
    kind, ids, header, arrays, raw, bad_file = data.draw(fold_avg_case(kind))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / 'sample_submission.csv').write_text(header + '\n' + ''.join(f'{i},1 1\n' for i in ids))
        files = []
        for k, a in enumerate(arrays):
            files.append(d / f'f{k}.npy')
            np.save(files[-1], a)
        if kind == 'truncated file':
            files[bad_file].write_bytes(files[bad_file].read_bytes()[:raw])
        elif kind == 'not an array':
            files[bad_file].write_bytes(b'id,rle_mask\n')
        out = d / 'out' / 'sub.csv'
        code, lines, _ = run_main('predict_fold_avg.py', predict_fold_avg.main, [*files, '--data_dir', d, '--out', out],
                                  capsys)
        if kind in FOLD_GOOD:
            assert code == 0, (kind, lines)
            assert out.read_text() == expected_submission(arrays, ids)
        else:
            assert_refused(code, lines, 'predict_fold_avg.py')
            assert not out.parent.exists() or list(out.parent.iterdir()) == [], kind
