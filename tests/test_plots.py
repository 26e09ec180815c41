"""What users look at: the learning curve, the validation examples and the threshold curve."""
import re
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import cut_real, run_main
from test_errors import LITE
from utils.errors import UserError
from utils.plots import (TRUE_COLOR, PRED_COLOR, ExperimentPlots, TensorBoardLog, learning_curve,
                         summary_writer_class, threshold_curve)
from utils.run_folder import Experiment


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


@pytest.mark.real_data
def test_experiment_plots(tmp_path, val_set):
    images, masks, probs = val_set
    exp = Experiment(tmp_path / 'exp')
    plots = ExperimentPlots(exp, images, masks)
    plots(rows_of(60, cycles=2), probs)
    curve = read_png(exp.root / 'logs' / 'learning_curve.png')
    tiles = read_png(exp.root / 'logs' / 'val_examples.png')
    assert curve.shape == (400, 1300, 3)
    assert tiles.shape[1] >= 8 * 202 and tiles.shape[0] >= 2 * 202
    for img in (curve, tiles):
        assert img.std() > 20  # not blank
    assert has_color(tiles, TRUE_COLOR) and has_color(tiles, PRED_COLOR)
    assert not list((exp.root / 'logs').glob('.*tmp*'))


@pytest.mark.real_data
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


@pytest.mark.real_data
@pytest.mark.parametrize('n_val, n_epochs', [(1, 1), (3, 2), (5, 1)])
def test_plots_of_tiny_runs(tmp_path, val_set, n_val, n_epochs):
    images, masks, probs = (a[:n_val] for a in val_set)
    rows = rows_of(n_epochs)
    rows[0]['val_loss'] = float('nan')  # a diverged epoch must not break the picture
    ExperimentPlots(Experiment(tmp_path / 'exp'), images, np.zeros_like(masks))(rows, probs)
    for name in ('learning_curve.png', 'val_examples.png'):
        assert read_png(tmp_path / 'exp' / 'logs' / name).std() > 10


def test_learning_curve_follows_the_data():
    rows = rows_of(40)
    a = learning_curve(rows, 'run')
    assert np.array_equal(a, learning_curve(rows_of(40), 'run'))  # the same data draws the same picture
    changed = [dict(r) for r in rows]
    changed[-1]['val_loss'] = 2.0
    b = learning_curve(changed, 'run')
    assert b.shape == a.shape and (np.abs(a.astype(int) - b).sum(-1) > 60).sum() > 200
    # Cycle starts are drawn: the same values with two cycles give another picture.
    cycled = [dict(r, cycle=int(r['epoch'] > 20)) for r in rows]
    c = learning_curve(cycled, 'run')
    assert (np.abs(a.astype(int) - c).sum(-1) > 60).sum() > 200


def test_threshold_curve(tmp_path):
    ths = np.linspace(0, 1, 101)
    scores = 0.8 - (ths - 0.42) ** 2
    path = threshold_curve(tmp_path / 'th.png', ths, scores, 0.42)
    img = read_png(path)
    assert img.shape == (440, 720, 3) and img.std() > 20
    # Another chosen threshold is marked elsewhere.
    moved = read_png(threshold_curve(tmp_path / 'th2.png', ths, scores, 0.6))
    assert (np.abs(img.astype(int) - moved).sum(-1) > 60).sum() > 100
    # With the small-region search: a second panel, per-image scores or means alike.
    per_image = [(m, np.full(50, 0.8 + m / 1000)) for m in (10, 20, 40)]
    both = read_png(threshold_curve(tmp_path / 'th3.png', ths, scores, 0.42, sizes=per_image, min_size=40))
    assert both.shape == (440, 1140, 3)
    means = read_png(threshold_curve(tmp_path / 'th4.png', ths, scores, 0.42, sizes=[(m, s.mean()) for m, s in per_image],
                                     min_size=40))
    assert np.array_equal(both, means)


def _events(folder):
    """{tag: [(step, value)]} of the TensorBoard events in folder, purges applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={'scalars': 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_tensorboard_scalars_terms_and_resume(tmp_path):
    exp = Experiment(tmp_path / 'exp')
    rows = rows_of(3)
    for r in rows:
        r['terms'] = {'bce': 0.5 / r['epoch'], 'lovasz': 1.0 / r['epoch']}
    board = TensorBoardLog(exp)
    for e in (1, 2, 3):
        board(rows[:e], None, final=e == 3)
    board.close()
    ev = _events(exp.root / 'tensorboard')
    assert {'loss/train', 'loss/val', 'val/iou', 'val/score', 'lr', 'time/epoch_seconds',
            'loss_terms/bce', 'loss_terms/lovasz'} <= set(ev)
    assert [s for s, _ in ev['loss/train']] == [1, 2, 3]
    assert ev['loss_terms/lovasz'][2][1] == pytest.approx(1 / 3)
    assert ev['val/score'][1][1] == pytest.approx(rows[1]['val_score'])
    # Resumed from the checkpoint of epoch 2 (the killed run had logged epoch 3 already): epoch 3 is
    # replaced by the resumed run's, each epoch once.
    resumed = [dict(r) for r in rows_of(4)]
    resumed[2]['train_loss'] = 9.0
    board = TensorBoardLog(exp, resume_epoch=2)
    board(resumed[:3], None)
    board(resumed, None, final=True)
    board.close()
    ev = _events(exp.root / 'tensorboard')
    assert [s for s, _ in ev['loss/train']] == [1, 2, 3, 4]
    assert ev['loss/train'][2][1] == pytest.approx(9.0)
    assert ev['loss/train'][0][1] == pytest.approx(rows[0]['train_loss'])
    # A new run in the same directory (--overwrite) starts from an empty tensorboard folder.
    board = TensorBoardLog(exp)
    board(rows_of(1), None)
    board.close()
    assert [s for s, _ in _events(exp.root / 'tensorboard')['loss/train']] == [1]


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch, capsys):
    import train
    from utils.errors import run_cli
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)  # as if tensorboard were not installed
    with pytest.raises(UserError, match='pip install tensorboard'):
        summary_writer_class()
    exp = tmp_path / 'exp'
    argv = [*LITE, '--tensorboard', '--data_dir', str(tmp_path / 'no_data'), '--experiment_dir', str(exp)]
    with pytest.raises(SystemExit) as info:
        run_cli(train.main, argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and 'pip install tensorboard' in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1 and not exp.exists()


def test_train_folds_passes_tensorboard_to_train():
    import train
    import train_folds
    args = train_folds.parse_args(['--folds', '0-1', '--experiment_dir', 'x', '--tensorboard', '--n_epochs', '2'])
    assert '--tensorboard' in args.train_args
    assert train.parse_args([*args.train_args, '--experiment_dir', 'x_fold0']).tensorboard


@pytest.mark.real_data
def test_training_and_threshold_search_write_their_pngs(tmp_path):
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    data = cut_real(tmp_path / 'data', 32, 8)
    stack(['--data_dir', str(data), '--workers', '1'])
    make_folds(['--p', str(data / 'train.csv'), '--n', '4'])
    exp = tmp_path / 'exp'
    r = run_main(['train.py', *LITE, '--n_epochs', '2', '--data_dir', data, '--experiment_dir', exp,
                  '--loss', 'bce_lovasz', '--tensorboard'])
    assert 'epoch 2/2' in r.stderr  # the per-epoch progress bar
    # Each epoch's line gives the score at 0.5 and at the best of a coarse grid, which is never lower.
    lines = re.findall(r'epoch (\d)/2  train \S+  val \S+  iou \S+  score (\d\.\d{3}) \(at (0\.\d\d): (\d\.\d{3})\)',
                       r.stdout)
    assert [e for e, *_ in lines] == ['1', '2'] and all(float(b) >= float(a) for _, a, _, b in lines), r.stdout
    curve = read_png(exp / 'logs' / 'learning_curve.png')
    tiles = read_png(exp / 'logs' / 'val_examples.png')
    assert curve.shape == (400, 1300, 3) and curve.std() > 20 and tiles.std() > 20
    ev = _events(exp / 'tensorboard')
    for tag in ('loss/train', 'val/score', 'loss_terms/bce', 'loss_terms/lovasz'):
        assert [s for s, _ in ev[tag]] == [1, 2], tag
    log = pd.read_csv(exp / 'logs' / 'log.csv')  # the log keeps its columns
    assert list(log.columns) == ['epoch', 'cycle', 'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr', 'seconds']
    bce, lovasz = (np.array([v for _, v in ev[f'loss_terms/{k}']]) for k in ('bce', 'lovasz'))
    assert np.allclose(bce + lovasz, log['train_loss'], rtol=1e-4)
    masks = sorted((exp / 'snapshots').glob('val_masks_*.npy'))[-1]
    r = run_main(['optimize_threshold.py', '--masks_fn', masks])
    png = masks.with_name(masks.stem + '.thresholds.png')
    assert read_png(png).std() > 20
    assert read_png(png).shape == (440, 1140, 3)  # the min-size panel beside the threshold curve
    # the breakdown by coverage covers every validation image once
    lines = r.stdout[r.stdout.index('by salt coverage'):].splitlines()[2:6]
    assert sum(int(line.split()[-3]) for line in lines) == len(np.load(masks))
