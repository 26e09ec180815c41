"""The Python API (salt): train with a TrainConfig or keyword options, predict a snapshot, write a
submission; the same checks and the same saved config as the command line."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import salt
from conftest import run_main
from net.training import build_config, parse_args
from tools.synthetic import generate
from utils.errors import UserError


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('api') / 'data'
    generate(d, n_train=40, n_test=10, seed=3)
    run_main(['utils/stack_and_save.py', '--data_dir', d])
    run_main(['utils/make_folds.py', '--p', d / 'train.csv', '--n', '4'])
    return d


TINY = dict(arch='unet_lite', pretrained='none', n_epochs=1, batch_size=4, threads=1, input='pad112')


def test_train_predict_and_submit_from_python(data, tmp_path):
    exp = tmp_path / 'exp'
    summary = salt.train(data_dir=str(data), experiment_dir=str(exp), **TINY)
    assert summary['epochs_run'] == 1 and (exp / 'summary.json').is_file()
    saved = json.loads((exp / 'train_config.json').read_text())
    assert saved['train_augs'] == 'train_112_v3' and saved['input'] == 'pad112' and saved['val_augs'] == 'val_112'
    probs, ids = salt.predict(exp)  # the experiment's best snapshot, the data it was trained on
    sample = pd.read_csv(data / 'sample_submission.csv')
    assert probs.shape == (10, 101, 101) and probs.dtype == np.float32 and list(ids) == list(sample['id'])
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    # an array of images instead of the test set: the same probabilities for the same images
    again, none = salt.predict(exp, images=np.load(data / 'test_images.npy')[:3])
    assert none is None and np.allclose(again, probs[:3], atol=1e-5)
    out = tmp_path / 'sub.csv'
    salt.write_submission(out, ids, probs, th=0.5)
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(sub.columns) == ['id', 'rle_mask'] and list(sub['id']) == list(sample['id'])


def test_a_config_object_saves_what_the_command_line_saves(data, tmp_path):
    argv = ['--arch', 'unet_plain_ds', '--input', 'pad128', '--loss', 'combined_bce', '--lr', '3e-4', '--cycles', '2',
            '--n_epochs', '4', '--data_dir', str(data), '--experiment_dir', str(tmp_path / 'e')]
    from_cli = parse_args(argv)
    cfg = salt.TrainConfig(arch='unet_plain_ds', train_augs='train_128_v3', loss='combined_bce', lr=3e-4, cycles=2,
                           n_epochs=4, data_dir=str(data), experiment_dir=str(tmp_path / 'e'))
    assert dataclasses.replace(from_cli, given=frozenset()) == cfg
    a, b = build_config(from_cli, quiet=True).record(), build_config(cfg, quiet=True).record()
    a.pop('command'), b.pop('command')
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


@pytest.mark.parametrize('options, phrase', [
    (dict(lr=-1.0), '--lr'),
    (dict(arch='unet_nope'), 'unet_plain_ds'),
    (dict(input='pad100'), 'resize202_pad256'),
    (dict(n_epochs='3'), 'n_epochs must be of type int'),
    (dict(colour='red'), 'colour: not a TrainConfig field'),
    (dict(swa=0.5, cycles=2, n_epochs=4), '--swa and --cycles'),
    (dict(batch_size=0), '--batch_size'),
])
def test_bad_options_are_the_command_lines_one_line_errors(options, phrase, tmp_path):
    with pytest.raises(UserError) as e:
        salt.train(experiment_dir=str(tmp_path / 'e'), **options)
    assert phrase in str(e.value) and '\n' not in str(e.value)
    assert not (tmp_path / 'e').exists()


def test_experiment_dir_is_required():
    with pytest.raises(UserError, match='experiment_dir is required'):
        salt.train(arch='unet_lite')
