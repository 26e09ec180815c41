"""Tests of the synthetic data generator: file layout and formats, statistics, determinism."""
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.errors import UserError
from utils.rle import rle_decode
from tools.synthetic import SIZE, generate, make_sample

REPO = Path(__file__).resolve().parents[1]


def read_csv(path):
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def tree_bytes(root):
    """{relative path: file bytes} of every file under `root`."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('synthetic') / 'data'
    summary = generate(out, n_train=40, n_test=12, seed=3)
    return out, summary


@pytest.fixture(scope='module')
def samples():
    rng = np.random.default_rng(123)
    return [make_sample(rng, rng.random() >= 0.4) for _ in range(300)]


def test_layout_and_formats(dataset):
    out, summary = dataset
    header, train = read_csv(out / 'train.csv')
    assert header == ['id', 'rle_mask']
    assert len(train) == 40 and summary['n_train'] == 40 and summary['n_test'] == 12
    for sample_id, rle in train:
        image = cv2.imread(str(out / 'train/images' / f'{sample_id}.png'), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
        mask = cv2.imread(str(out / 'train/masks' / f'{sample_id}.png'), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint16
        assert set(np.unique(mask).tolist()) <= {0, 65535}
        assert np.array_equal(rle_decode(rle), (mask > 0).astype(np.uint8))

    header, submission = read_csv(out / 'sample_submission.csv')
    assert header == ['id', 'rle_mask']
    test_ids = [row[0] for row in submission]
    assert len(test_ids) == 12
    assert sorted(p.stem for p in (out / 'test/images').glob('*.png')) == sorted(test_ids)
    for sample_id in test_ids:
        image = cv2.imread(str(out / 'test/images' / f'{sample_id}.png'), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert all(rle == '1 1' for _, rle in submission)  # like Kaggle's sample

    header, truth = read_csv(out / 'test_truth.csv')
    assert header == ['id', 'rle_mask'] and [row[0] for row in truth] == test_ids
    for _, rle in truth:
        rle_decode(rle)  # well-formed

    train_ids = [row[0] for row in train]
    all_ids = train_ids + test_ids
    assert len(set(all_ids)) == len(all_ids)
    assert all(len(i) == 10 and all(c in '0123456789abcdef' for c in i) for i in all_ids)
    assert sorted(p.stem for p in (out / 'train/images').glob('*.png')) == sorted(train_ids)
    assert sorted(p.stem for p in (out / 'train/masks').glob('*.png')) == sorted(train_ids)
    assert not (out / 'test/masks').exists()

    header, depths = read_csv(out / 'depths.csv')
    assert header == ['id', 'z']
    assert sorted(row[0] for row in depths) == sorted(all_ids)
    assert all(51 <= int(z) <= 959 for _, z in depths)


def test_mask_coverage_statistics(samples):
    coverage = np.array([mask.mean() for _, mask in samples])
    assert 0.3 <= (coverage == 0).mean() <= 0.5
    salted = coverage[coverage > 0]
    assert salted.min() < 0.02
    assert salted.max() > 0.95
    assert 0.15 < np.median(salted) < 0.6
    for image, mask in samples:
        assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}


def test_image_intensity_statistics(samples):
    stds = np.array([image.std() for image, _ in samples])
    means = np.array([image.mean() for image, _ in samples])
    assert 15 < np.median(stds) < 45
    # Like the real data, some images are blank or nearly so, but they are a small minority.
    assert 0 < (stds < 10).mean() < 0.2
    assert 90 < np.median(means) < 160


def test_salt_cues(samples):
    """Inside salt the texture is weak; along its boundary the gradient is strong."""
    inside_var, outside_var, edge_grad, mean_grad = [], [], [], []
    kernel = np.ones((9, 9), np.uint8)
    for image, mask in samples:
        if not 0 < mask.mean() < 1:
            continue
        f = image.astype(np.float32)
        mean = cv2.blur(f, (7, 7))
        local_var = cv2.blur(f * f, (7, 7)) - mean * mean
        # Stay clear of the boundary, whose reflection is strong on both sides.
        inner = cv2.erode(mask, kernel, borderType=cv2.BORDER_REPLICATE) > 0
        outer = cv2.erode(1 - mask, kernel, borderType=cv2.BORDER_REPLICATE) > 0
        if inner.sum() > 50 and outer.sum() > 50:
            inside_var.append(local_var[inner].mean())
            outside_var.append(local_var[outer].mean())
        grad = np.hypot(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1))
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        edge_grad.append(grad[edge].mean())
        mean_grad.append(grad.mean())
    assert len(inside_var) > 30
    assert np.mean(inside_var) < 0.5 * np.mean(outside_var)
    assert (np.array(inside_var) < np.array(outside_var)).mean() > 0.8
    assert np.mean(edge_grad) > 1.5 * np.mean(mean_grad)
    assert (np.array(edge_grad) > np.array(mean_grad)).mean() > 0.8


def test_make_sample_respects_with_salt():
    rng = np.random.default_rng(7)
    for _ in range(50):
        assert make_sample(rng, True)[1].any()
        assert not make_sample(rng, False)[1].any()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    generate(tmp_path / 'a', n_train=8, n_test=3, seed=11)
    generate(tmp_path / 'b', n_train=8, n_test=3, seed=11)
    generate(tmp_path / 'c', n_train=8, n_test=3, seed=12)
    a, b, c = (tree_bytes(tmp_path / k) for k in 'abc')
    assert a == b
    assert a['train.csv'] != c['train.csv']
    assert set(a) != set(c)  # other ids


def test_refuses_to_overwrite_then_overwrites(tmp_path):
    out = tmp_path / 'data'
    generate(out, n_train=6, n_test=2, seed=1)
    before = tree_bytes(out)
    with pytest.raises(UserError, match='overwrite'):
        generate(out, n_train=5, n_test=2, seed=2)
    assert tree_bytes(out) == before

    summary = generate(out, n_train=5, n_test=2, seed=2, overwrite=True)
    assert summary['n_train'] == 5
    _, train = read_csv(out / 'train.csv')
    # The earlier set's images are gone: the folders match the new csv files.
    assert sorted(p.stem for p in (out / 'train/images').glob('*.png')) == sorted(r[0] for r in train)
    assert len(list((out / 'test/images').glob('*.png'))) == 2


def test_overwrite_never_replaces_a_data_set_made_otherwise(tmp_path):
    # The competition's layout, ids of 10 hex digits like the synthetic ones: --overwrite must leave it be.
    out = tmp_path / 'data'
    generate(out, n_train=4, n_test=2, seed=3)
    for made_here in ('test_truth.csv', 'synthetic.json'):
        (out / made_here).unlink()
    before = tree_bytes(out)
    with pytest.raises(UserError, match='did not make it'):
        generate(out, n_train=4, n_test=2, seed=4, overwrite=True)
    assert tree_bytes(out) == before
    # PNGs alone (a half-unzipped download) are kept too
    for name in ('train.csv', 'depths.csv', 'sample_submission.csv'):
        (out / name).unlink()
    before = tree_bytes(out)
    with pytest.raises(UserError, match='did not make it'):
        generate(out, n_train=4, n_test=2, seed=4, overwrite=True)
    assert tree_bytes(out) == before
    # a set made here before the marker existed (test_truth.csv alone) is replaced
    old = tmp_path / 'old'
    generate(old, n_train=4, n_test=2, seed=3)
    (old / 'synthetic.json').unlink()
    assert generate(old, n_train=3, n_test=1, seed=4, overwrite=True)['n_train'] == 3


def test_rejects_bad_counts(tmp_path):
    with pytest.raises(UserError):
        generate(tmp_path / 'x', n_train=0, n_test=1)
    with pytest.raises(UserError):
        generate(tmp_path / 'x', n_train=1, n_test=-1)


@pytest.mark.slow
@pytest.mark.parametrize('entry', [['-m', 'tools.synthetic'], ['tools/synthetic.py']])
def test_cli(tmp_path, entry):
    out = tmp_path / 'cli'
    cmd = [sys.executable, *entry, '--out', str(out), '--n_train', '4', '--n_test', '2', '--seed', '5']
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 'train' in done.stdout and (out / 'train.csv').exists()
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2
    assert 'error' in again.stderr and 'Traceback' not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    forced = subprocess.run(cmd + ['--overwrite'], cwd=REPO, capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr


def test_never_mixes_its_images_into_a_folder_of_other_pngs(tmp_path):
    """A folder of PNGs without a data set's CSVs (a user's own images, a half-unzipped download) is not written
    into, with or without --overwrite: the new images would be mixed in among them."""
    for name in ('scan_01.png', '0123456789.png'):  # any name, the competition's form too
        out = tmp_path / name.split('.')[0]
        (out / 'train' / 'images').mkdir(parents=True)
        cv2.imwrite(str(out / 'train' / 'images' / name), np.zeros((101, 101), np.uint8))
        before = tree_bytes(out)
        for overwrite in (False, True):
            with pytest.raises(UserError, match='did not'):
                generate(out, n_train=4, n_test=2, seed=1, overwrite=overwrite)
            assert tree_bytes(out) == before


def test_a_stopped_run_is_finished_by_overwrite_only(tmp_path, monkeypatch):
    """Stopped while writing its images, a set is marked as made here: a plain rerun says to pass --overwrite
    (it would mix two sets), and --overwrite replaces it with a complete one."""
    out = tmp_path / 'data'
    real_imwrite, calls = cv2.imwrite, []

    def stop_after_three(path, image):
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real_imwrite(path, image)

    monkeypatch.setattr(cv2, 'imwrite', stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        generate(out, n_train=6, n_test=2, seed=1)
    monkeypatch.setattr(cv2, 'imwrite', real_imwrite)
    assert not (out / 'train.csv').exists() and list((out / 'train' / 'images').glob('*.png'))
    with pytest.raises(UserError, match='unfinished.*--overwrite'):
        generate(out, n_train=6, n_test=2, seed=2)
    generate(out, n_train=6, n_test=2, seed=2, overwrite=True)
    _, train = read_csv(out / 'train.csv')
    assert sorted(p.stem for p in (out / 'train/images').glob('*.png')) == sorted(r[0] for r in train)
