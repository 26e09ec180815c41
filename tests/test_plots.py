"""What users look at: the learning curve, the validation examples and the threshold curve."""
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, cut_real
from test_errors import LITE
from utils.experiment import Experiment
from utils.plots import TRUE_COLOR, PRED_COLOR, ExperimentPlots, nice_ticks, threshold_curve


def rows_of(n, cycles=1):
    per = max(1, n // cycles)
    return [{'epoch': e, 'cycle': (e - 1) // per, 'train_loss': 0.7 * 0.95 ** e, 'val_loss': 0.75 * 0.96 ** e,
             'val_iou': 0.7 * (1 - 0.9 ** e), 'val_score': 0.8 * (1 - 0.9 ** e), 'lr': 1e-3 * 0.97 ** ((e - 1) % per),
             'seconds': 1.0} for e in range(1, n + 1)]


@pytest.fixture(scope='module')
def val_set(real_dir):
    """Real images and masks (640, as many as a 10% fold) and blurred, shifted masks as probabilities."""
    ids = pd.read_csv(real_dir / 'train.csv', dtype=str)['id'][:80]
    images = np.stack([cv2.imread(str(real_dir / 'train' / 'images' / f'{i}.png'), cv2.IMREAD_GRAYSCALE) for i in ids])
    masks = np.stack([cv2.imread(str(real_dir / 'train' / 'masks' / f'{i}.png'), cv2.IMREAD_UNCHANGED) != 0 for i in ids])
    images, masks = np.tile(images, (8, 1, 1)), np.tile(masks, (8, 1, 1)).astype(np.uint8)
    rng = np.random.default_rng(0)
    probs = np.stack([cv2.GaussianBlur(np.roll(m.astype(np.float32), int(rng.integers(-8, 8)), axis=1), (0, 0), 3)
                      for m in masks])
    return images, masks, probs


def read_png(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} is not a readable PNG"
    return img


def has_color(img, bgr, tol=40):
    return bool((np.abs(img.astype(int) - np.array(bgr)).sum(-1) < tol).any())


def test_experiment_plots(tmp_path, val_set):
    images, masks, probs = val_set
    exp = Experiment(tmp_path / 'exp')
    plots = ExperimentPlots(exp, images, masks)
    plots(rows_of(60, cycles=2), probs)
    curve = read_png(exp.root / 'logs' / 'learning_curve.png')
    tiles = read_png(exp.root / 'logs' / 'val_examples.png')
    assert curve.shape[0] >= 300 and curve.shape[1] >= 900
    assert tiles.shape[1] >= 8 * 202 and tiles.shape[0] >= 2 * 202
    for img in (curve, tiles):
        assert img.std() > 20  # not blank
    assert has_color(tiles, TRUE_COLOR) and has_color(tiles, PRED_COLOR)
    assert not list((exp.root / 'logs').glob('.*tmp*'))


def test_plots_are_drawn_first_then_at_most_every_interval_and_last(tmp_path, val_set):
    images, masks, probs = val_set
    exp = Experiment(tmp_path / 'exp')
    plots = ExperimentPlots(exp, images, masks, every=3600)
    curve = exp.root / 'logs' / 'learning_curve.png'
    assert plots(rows_of(1), probs) and curve.is_file()
    first = curve.read_bytes()
    assert not plots(rows_of(2), probs)  # within the interval: skipped
    assert curve.read_bytes() == first
    assert plots(rows_of(3), probs, final=True)  # the last epoch is always drawn
    assert curve.read_bytes() != first
    assert ExperimentPlots(exp, images, masks, every=0)(rows_of(4), probs)


@pytest.mark.parametrize('n_val, n_epochs', [(1, 1), (3, 2), (5, 1)])
def test_plots_of_tiny_runs(tmp_path, val_set, n_val, n_epochs):
    images, masks, probs = (a[:n_val] for a in val_set)
    rows = rows_of(n_epochs)
    rows[0]['val_loss'] = float('nan')  # a diverged epoch must not break the picture
    ExperimentPlots(Experiment(tmp_path / 'exp'), images, np.zeros_like(masks))(rows, probs)
    for name in ('learning_curve.png', 'val_examples.png'):
        assert read_png(tmp_path / 'exp' / 'logs' / name).std() > 10


def test_threshold_curve(tmp_path):
    ths = np.linspace(0, 1, 101)
    scores = 0.8 - (ths - 0.42) ** 2
    path = threshold_curve(tmp_path / 'th.png', ths, scores, 0.42)
    img = read_png(path)
    assert img.shape == (440, 720, 3) and img.std() > 20


def test_nice_ticks():
    assert nice_ticks(0.0, 1.0)[0] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ticks, step = nice_ticks(1, 200)
    assert step == 50 and ticks[0] == 50 and ticks[-1] == 200
    assert len(nice_ticks(0.1234, 0.1236)[0]) >= 2


def test_training_and_threshold_search_write_their_pngs(tmp_path):
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    data = cut_real(tmp_path / 'data', 32, 8)
    stack(['--data_dir', str(data), '--workers', '1'])
    make_folds(['--p', str(data / 'train.csv'), '--n', '4'])
    exp = tmp_path / 'exp'
    r = subprocess.run([sys.executable, 'train.py', *LITE, '--n_epochs', '2', '--data_dir', str(data),
                        '--experiment_dir', str(exp)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'epoch 2/2' in r.stderr  # the per-epoch progress bar
    curve = read_png(exp / 'logs' / 'learning_curve.png')
    tiles = read_png(exp / 'logs' / 'val_examples.png')
    assert curve.std() > 20 and tiles.std() > 20
    masks = sorted((exp / 'snapshots').glob('val_masks_*.npy'))[-1]
    r = subprocess.run([sys.executable, 'optimize_threshold.py', '--masks_fn', str(masks)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    png = masks.with_name(masks.stem + '.thresholds.png')
    assert read_png(png).std() > 20
