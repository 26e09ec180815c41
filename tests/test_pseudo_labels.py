"""tools/pseudo_labels.py: confident test masks join the training set as fold -1, and train.py trains on them."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.pseudo_labels import main, select, uncertain_share
from utils.data import fold_indices, load_test_images, load_train_arrays
from utils.errors import UserError
from utils.rle import rle_decode

ROOT = Path(__file__).resolve().parents[1]


def test_uncertain_share_counts_pixels_strictly_between_the_bounds():
    p = np.full((2, 101, 101), 0.95, np.float16)
    p[0, :10] = 0.5       # 1010 unsure pixels
    p[1, 0, :5] = 0.875   # on the bound (exact in float16): sure at confidence 0.875
    p[1, 1, :5] = 0.125
    got = uncertain_share(p, 0.875)
    assert got[0] == pytest.approx(1010 / 101 ** 2)
    assert got[1] == 0.0
    # a plain per-pixel loop agrees
    ref = [np.mean([(0.125 < v < 0.875) for v in img.astype(np.float32).ravel()]) for img in p]
    assert np.allclose(got, ref)


def test_select_takes_confident_images_and_thresholds_them():
    rng = np.random.default_rng(0)
    p = np.where(rng.random((4, 101, 101)) < 0.5, 0.02, 0.98).astype(np.float16)
    p[1] = rng.random((101, 101))          # noise: unsure everywhere
    p[2, 50:60, 50:60] = 0.6               # 100 unsure pixels (about 1 %)
    taken, masks = select(p, 0.9, 0.005, 0.5, 0)
    assert taken.tolist() == [0, 3]
    assert masks.dtype == np.uint8 and np.array_equal(masks, (p[[0, 3]].astype(np.float32) > 0.5))
    taken, masks = select(p, 0.9, 0.02, 0.7, 0)
    assert taken.tolist() == [0, 2, 3]
    assert masks[1, 55, 55] == 0 and masks[1].sum() == (p[2].astype(np.float32) > 0.7).sum()


def _probs(tmp_path, data, sure):
    """Test probabilities: image k is sure (0.01 / 0.99 halves) when k in sure, else a 0.5 blur."""
    n = len(load_test_images(data)[1])
    p = np.full((n, 101, 101), 0.5, np.float16)
    for k in sure:
        p[k] = 0.01
        p[k, :, : 20 + k] = 0.99
    path = tmp_path / 'test_probs.npy'
    np.save(path, p)
    return path, p


@pytest.mark.real_data
def test_pseudo_data_folder_trains_every_fold_and_validates_on_true_labels(tmp_path):
    from conftest import stacked_cut
    data = stacked_cut(tmp_path / 'data', 40, 10, n_folds=4)
    probs, p = _probs(tmp_path, data, sure=[1, 4, 7])
    before = {f: (data / f).read_bytes() for f in ('train.csv', 'train_with_folds.csv', 'train_images.npy')}
    out = tmp_path / 'pseudo'
    record = main(['--data_dir', str(data), '--probs', str(probs), '--out', str(out)])
    assert record['taken'] == 3 and record['labeled'] == 40
    images, masks = load_train_arrays(out)
    old_images, old_masks = load_train_arrays(data)
    test_images, test_ids = load_test_images(data)
    assert len(images) == 43
    assert np.array_equal(images[:40], old_images) and np.array_equal(masks[:40], old_masks)
    assert np.array_equal(images[40:], test_images[[1, 4, 7]])
    for j, k in enumerate([1, 4, 7]):
        assert masks[40 + j].sum() == 101 * (20 + k)
    # the rle in train.csv decodes to the stacked pseudo mask
    import csv
    rows = list(csv.DictReader(open(out / 'train.csv')))
    assert [r['id'] for r in rows[40:]] == [test_ids[k] for k in (1, 4, 7)]
    assert np.array_equal(rle_decode(rows[41]['rle_mask']), masks[41])
    # fold -1 trains in every fold and validates in none; validation sets are unchanged
    for fold in range(4):
        tr, va = fold_indices(out, out / 'train_with_folds.csv', fold)
        tr0, va0 = fold_indices(data, data / 'train_with_folds.csv', fold)
        assert np.array_equal(va, va0)
        assert set(range(40, 43)) <= set(tr.tolist()) and np.array_equal(tr[tr < 40], tr0)
    assert (out / 'test_images.npy').is_file() and (out / 'sample_submission.csv').is_file()
    assert json.loads((out / 'pseudo_labels.json').read_text())['ids'] == [test_ids[k] for k in (1, 4, 7)]
    assert all((data / f).read_bytes() == b for f, b in before.items())  # the source folder is untouched
    # train.py trains a fold on it (the pseudo images in the training part)
    r = subprocess.run([sys.executable, 'train.py', '--data_dir', str(out), '--fold', '0', '--arch', 'unet_plain',
                        '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms', 'crop_from_112',
                        '--n_epochs', '1', '--batch_size', '8', '--device', 'cpu', '--amp', 'off',
                        '--experiment_dir', str(tmp_path / 'exp')], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'exp' / 'summary.json').is_file()


@pytest.mark.real_data
def test_pseudo_labels_bad_input_is_one_line(tmp_path):
    from conftest import stacked_cut
    data = stacked_cut(tmp_path / 'data', 16, 6, n_folds=2)
    probs, _ = _probs(tmp_path, data, sure=[0])
    out = tmp_path / 'pseudo'
    cases = {
        'same folder': (['--out', str(data)], 'is the data folder itself'),
        'wrong count': (['--probs', str(_short(tmp_path)), '--out', str(out)], 'lists 6 images'),
        'auto without file': (['--th', 'auto', '--oof', str(tmp_path / 'none.json'), '--out', str(out)],
                              'make it with'),
    }
    for name, (extra, words) in cases.items():
        argv = ['--data_dir', str(data), '--probs', str(probs), *extra]
        with pytest.raises(UserError, match=words):
            main(argv)
    assert not out.exists()
    main(['--data_dir', str(data), '--probs', str(probs), '--out', str(out)])
    with pytest.raises(UserError, match='already exists'):
        main(['--data_dir', str(data), '--probs', str(probs), '--out', str(out)])
    r = subprocess.run([sys.executable, 'tools/pseudo_labels.py', '--data_dir', str(data), '--probs',
                        str(tmp_path / 'absent.npy'), '--out', str(tmp_path / 'p2')], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _short(tmp_path):
    path = tmp_path / 'short.npy'
    np.save(path, np.zeros((3, 101, 101), np.float16))
    return path
