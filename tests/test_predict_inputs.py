"""Predicting without the training set (a folder of PNGs, a test-only stack) and predict_se.py --th auto."""
import io
import json
import shutil
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from test_errors import visible_lines
from utils.errors import run_cli


def one_line_error(main, argv, *phrases):
    """main(argv) as its script runs it: exit 2 and one line holding `phrases`; returns the line."""
    old = sys.stderr
    sys.stderr = io.StringIO()
    try:
        with pytest.raises(SystemExit) as e:
            run_cli(main, [str(a) for a in argv])
        err = sys.stderr.getvalue()
    finally:
        sys.stderr = old
    lines = visible_lines(err)
    assert e.value.code == 2 and len(lines) == 1 and 'Traceback' not in err, err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """Synthetic data (stacked, folded) and a two-cycle run of unet_lite snapshots with chosen validation masks.

    Cycle 0's masks are 0.9 on salt and 0.6 elsewhere (perfect for thresholds in [0.6, 0.9)), cycle 1's
    0.3 and 0.0 ([0, 0.3)); their mean, 0.6 and 0.3, is perfect in [0.3, 0.6) only.
    """
    import torch

    from net.models import build_model
    from tools.synthetic import generate
    from utils.data import fold_indices
    from utils.make_folds import main as make_folds
    from utils.run_folder import Experiment
    from utils.stack_and_save import main as stack
    tmp = tmp_path_factory.mktemp('inputs')
    data = tmp / 'data'
    generate(data, n_train=40, n_test=10, seed=3)
    stack(['--data_dir', str(data), '--workers', '1'])
    make_folds(['--p', str(data / 'train.csv'), '--n', '4'])
    _, va = fold_indices(data, data / 'train_with_folds.csv', 0)
    truth = np.load(data / 'train_masks.npy')[va].astype(np.float32)
    exp = Experiment(tmp / 'se')
    exp.prepare(resume=False, overwrite=False)
    exp.release()
    config = {'arch': 'unet_lite', 'fold': 0, 'limit': 0, 'cycles': 2, 'data_dir': str(data),
              'folds_csv': str(data / 'train_with_folds.csv'), 'val_augs': 'val_128', 'val_transforms': 'crop_from_128'}
    exp.write_config(config)
    torch.manual_seed(0)
    snaps = []
    for cycle, (salt, rest) in enumerate(((0.9, 0.6), (0.3, 0.0))):
        model = build_model('unet_lite', pretrained=None)
        metrics = {'val_loss': 0.5, 'val_score': 0.5, 'val_iou': 0.5}
        snaps.append(exp.save_snapshot(model.state_dict(), config, cycle + 1, cycle, metrics,
                                       truth * salt + (1 - truth) * rest))
    return {'data': data, 'exp': exp.root, 'snaps': snaps, 'tmp': tmp}


def predict(argv):
    import predict
    return predict.main([str(a) for a in argv] + ['--device', 'cpu', '--threads', '1'])


def test_images_folder_predicts_like_the_stacked_test_set(run, capsys):
    snap, data = run['snaps'][0], run['data']
    stacked = predict(['--snapshot', snap, '--data_dir', data])
    from_pngs = predict(['--snapshot', snap, '--images', data / 'test' / 'images'])
    assert from_pngs == run['exp'] / 'predictions' / f'{snap.name}.images.csv'
    sub = pd.read_csv(from_pngs, dtype=str, keep_default_na=False)
    ids = pd.read_csv(data / 'sample_submission.csv', dtype=str)['id']
    assert list(sub['id']) == sorted(ids)  # without --data_dir: the ids sorted
    a, b = np.load(stacked.with_suffix('.npy')), np.load(from_pngs.with_suffix('.npy'))
    order = {i: k for k, i in enumerate(ids)}
    assert np.array_equal(b, a[[order[i] for i in sub['id']]])
    # with a --data_dir that has sample_submission.csv: its order
    out = predict(['--snapshot', snap, '--images', data / 'test' / 'images', '--data_dir', data,
                   '--out', run['tmp'] / 'ordered.csv'])
    assert list(pd.read_csv(out, dtype=str)['id']) == list(ids)
    assert np.array_equal(np.load(out.with_suffix('.npy')), a)


def test_images_folder_without_any_training_data(run, tmp_path):
    """A folder of PNGs and a snapshot are all predict_tta.py needs."""
    import predict_tta
    pngs = tmp_path / 'new_survey'
    shutil.copytree(run['data'] / 'test' / 'images', pngs)
    snap = shutil.copy(run['snaps'][1], tmp_path / run['snaps'][1].name)  # outside its experiment, too
    out = predict_tta.main(['--snapshot', str(snap), '--images', str(pngs), '--device', 'cpu', '--threads', '1',
                            '--data_dir', str(tmp_path / 'no_data_here')])
    assert out == tmp_path / 'predictions' / f'{run["snaps"][1].name}.tta_null_hflip.new_survey.csv'
    assert len(pd.read_csv(out)) == len(list(pngs.glob('*.png')))


def test_bad_image_folders(run, tmp_path):
    import predict
    snap = run['snaps'][0]
    base = ['--snapshot', snap, '--device', 'cpu', '--threads', '1', '--out', tmp_path / 'x.csv']
    one_line_error(predict.main, [*base, '--images', tmp_path / 'absent'], 'image folder not found', '--images')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no pngs')
    one_line_error(predict.main, [*base, '--images', tmp_path / 'empty'], 'holds no .png files')
    good = np.full((101, 101), 128, np.uint8)
    cases = {'size': (np.zeros((64, 80), np.uint8), 'is 80x64, not 101x101'),
             'colour': (np.dstack([good, good, good // 2]), 'is a colour image, not grayscale'),
             'corrupt': (None, 'cannot decode')}
    for name, (image, phrase) in cases.items():
        d = tmp_path / name
        d.mkdir()
        cv2.imwrite(str(d / 'a_fine_one.png'), good)
        if image is None:
            (d / 'b_bad.png').write_bytes(b'\x89PNG not really')
        else:
            cv2.imwrite(str(d / 'b_bad.png'), image)
        one_line_error(predict.main, [*base, '--images', d], phrase, 'b_bad.png')
    # a gray image stored as three equal channels is fine (the competition's are)
    d = tmp_path / 'three_equal'
    d.mkdir()
    cv2.imwrite(str(d / 'x.png'), np.dstack([good] * 3))
    assert predict.main([*map(str, base), '--images', str(d)]).is_file()
    # --data_dir's sample_submission.csv must match the folder
    one_line_error(predict.main, [*base, '--images', d, '--data_dir', run['data']], 'ids without a PNG',
                   'leave out --data_dir')
    assert not (run['exp'] / 'predictions' / 'x.csv').exists()


def test_stack_the_test_set_alone(run, tmp_path, capsys):
    from utils.stack_and_save import main as stack
    d = tmp_path / 'inference_only'
    d.mkdir()
    shutil.copytree(run['data'] / 'test', d / 'test')
    shutil.copy(run['data'] / 'sample_submission.csv', d)
    arrays = stack(['--data_dir', str(d), '--workers', '1'])
    assert list(arrays) == ['test_images.npy']
    assert np.array_equal(np.load(d / 'test_images.npy'), np.load(run['data'] / 'test_images.npy'))
    assert not (d / 'train_images.npy').exists()
    assert 'stacked the test images only' in capsys.readouterr().out
    # and predict.py reads it
    out = predict(['--snapshot', run['snaps'][0], '--data_dir', d, '--out', tmp_path / 'sub.csv'])
    assert len(pd.read_csv(out)) == 10
    # a training part without the others is still an error, as before
    (d / 'train' / 'images').mkdir(parents=True)
    one_line_error(stack, ['--data_dir', d], 'train.csv not found')


def test_snapshot_ensemble_th_auto(run, capsys):
    import predict_se
    exp = run['exp']
    out = predict_se.main(['--snapshot_dir', str(exp), '--th', 'auto', '--min_size', 'auto', '--device', 'cpu',
                           '--threads', '1', '--tta', 'null'])
    text = capsys.readouterr().out
    found = json.loads((exp / 'snapshots' / 'snapshot_ensemble.best.json').read_text())
    # the mean of the two cycles' masks is perfect between 0.3 and 0.6 only: neither cycle's own range
    assert 0.3 <= found['threshold'] < 0.6 and found['score'] == 1.0 and found['min_size'] == 0
    assert [s.rsplit('/', 1)[-1] for s in found['snapshots']] == [s.name for s in run['snaps']]
    assert f"--th {found['threshold']:.2f} --min_size 0" in text and 'snapshot_ensemble.best.json' in text
    assert (exp / 'snapshots' / 'snapshot_ensemble.thresholds.csv').is_file()
    assert out == exp / 'predictions' / 'snapshot_ensemble.csv'
    from utils.rle import rle_encode
    probs = np.load(out.with_suffix('.npy'))
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(sub['rle_mask']) == [rle_encode(m > found['threshold']) for m in probs]
    # the last cycle alone: its own masks decide (perfect below 0.3)
    predict_se.main(['--snapshot_dir', str(exp / 'snapshots'), '--cycles', '1', '--th', 'auto', '--device', 'cpu',
                     '--threads', '1', '--tta', 'null', '--out', str(run['tmp'] / 'last.csv')])
    last = json.loads((exp / 'snapshots' / 'snapshot_ensemble.best.json').read_text())
    assert last['threshold'] < 0.3 and len(last['snapshots']) == 1


def test_snapshot_ensemble_of_an_images_folder(run):
    import predict_se
    out = predict_se.main(['--snapshot_dir', str(run['exp']), '--images', str(run['data'] / 'test' / 'images'),
                           '--device', 'cpu', '--threads', '1', '--tta', 'null'])
    assert out == run['exp'] / 'predictions' / 'snapshot_ensemble.images.csv'
    assert len(pd.read_csv(out)) == 10


def test_empty_below_empties_what_the_salt_head_doubts(run, tmp_path):
    """--empty_below P: masks of images with salt probability below P are empty; the others and the raw masks
    are as without it."""
    import torch

    from net.models import build_model
    from utils.rle import rle_encode
    from utils.run_folder import Experiment
    exp = Experiment(tmp_path / 'ds')
    config = {'arch': 'unet_lite_ds', 'fold': 0, 'limit': 0, 'cycles': 1, 'data_dir': str(run['data']),
              'folds_csv': str(run['data'] / 'train_with_folds.csv'), 'val_augs': 'val_128',
              'val_transforms': 'crop_from_128'}
    torch.manual_seed(1)
    model = build_model('unet_lite_ds', pretrained=None)
    snap = exp.save_snapshot(model.state_dict(), config, 1, 0, {'val_loss': 0.5, 'val_score': 0.5},
                             np.zeros((2, 101, 101), np.float32))
    base = ['--snapshot', snap, '--data_dir', run['data'], '--th', '0']  # threshold 0: no mask is empty by itself
    plain = predict([*base, '--out', tmp_path / 'plain.csv'])
    assert not plain.with_name('plain.salt.npy').exists()
    import predict_tta
    with_salt = predict([*base, '--out', tmp_path / 'p.csv', '--empty_below', '0'])
    salt = np.load(with_salt.with_name('p.salt.npy')).astype(np.float32)
    assert salt.shape == (10,) and 0 < salt.min() and salt.max() < 1
    cut = float(np.median(salt))
    out = predict([*base, '--out', tmp_path / 'e.csv', '--empty_below', str(cut)])
    probs = np.load(out.with_suffix('.npy'))
    assert np.array_equal(probs, np.load(plain.with_suffix('.npy')))
    rles = list(pd.read_csv(out, dtype=str, keep_default_na=False)['rle_mask'])
    doubted = salt < cut
    assert 0 < doubted.sum() < len(salt)
    assert rles == ['' if d else rle_encode(p > 0) for d, p in zip(doubted, probs)]
    assert all(pd.read_csv(plain, dtype=str, keep_default_na=False)['rle_mask'])
    # with TTA the salt probabilities are averaged over the views too
    tta = predict_tta.main([*map(str, base), '--out', str(tmp_path / 't.csv'), '--empty_below', '1', '--device', 'cpu',
                            '--threads', '1'])
    assert not any(pd.read_csv(tta, dtype=str, keep_default_na=False)['rle_mask'])
    # a model without a salt head: one line
    import predict as predict_script
    one_line_error(predict_script.main, ['--snapshot', run['snaps'][0], '--data_dir', run['data'], '--empty_below',
                                         '0.5', '--out', tmp_path / 'x.csv', '--threads', '1'],
                   '--empty_below needs a model with a salt head', 'unet_lite_ds')
    assert not (tmp_path / 'x.csv').exists()
