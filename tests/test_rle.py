import numpy as np
import pandas as pd
import pytest

from utils.rle import rle_decode, rle_encode


def test_empty_and_full():
    assert rle_encode(np.zeros((101, 101))) == ''
    assert rle_encode(np.ones((101, 101))) == '1 10201'
    assert rle_decode('').sum() == 0
    assert rle_decode('1 10201').all()


def test_first_last_and_single_pixels():
    m = np.zeros((101, 101), np.uint8)
    m[0, 0] = 1
    assert rle_encode(m) == '1 1'
    m[:] = 0
    m[100, 100] = 1
    assert rle_encode(m) == '10201 1'
    m[:] = 0
    m[1, 0] = 1  # column-major: second pixel of the first column
    m[0, 1] = 1  # first pixel of the second column is pixel 102
    assert rle_encode(m) == '2 1 102 1'


def test_runs_cross_columns():
    m = np.zeros((101, 101), np.uint8)
    m[99:, 0] = 1
    m[:2, 1] = 1
    assert rle_encode(m) == '100 4'


@pytest.mark.parametrize('seed', range(5))
def test_round_trip_random(seed):
    rng = np.random.default_rng(seed)
    m = (rng.random((101, 101)) < rng.random()).astype(np.uint8)
    assert (rle_decode(rle_encode(m)) == m).all()


def test_any_nonzero_is_salt():
    m = np.zeros((101, 101), np.uint16)
    m[5, 5] = 65535
    assert rle_encode(m) == rle_encode(m.astype(bool))


@pytest.mark.parametrize('bad', ['1', 'a 3', '0 5', '10200 5', '5 3 6 2', '1 -1'])
def test_decode_rejects_malformed(bad):
    with pytest.raises(ValueError):
        rle_decode(bad)


@pytest.mark.real_data
def test_real_train_csv_reproduced_exactly(real_dir):
    """Every rle of the competition's train.csv equals our encoding of its mask PNG."""
    import cv2
    frame = pd.read_csv(real_dir / 'train.csv', dtype=str, keep_default_na=False)
    assert len(frame) > 1000
    bad = []
    for i, r in zip(frame['id'], frame['rle_mask']):
        png = cv2.imread(str(real_dir / 'train' / 'masks' / f'{i}.png'), cv2.IMREAD_UNCHANGED)
        if rle_encode(png) != r:
            bad.append(i)
    assert bad == []
