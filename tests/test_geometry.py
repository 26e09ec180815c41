"""One record per input preset (net.geometry): its parts agree, --train_augs alone fixes the rest, and
overrides of --val_augs / --val_transforms are checked in one place."""
import dataclasses

import numpy as np
import pytest
import torch

from net import augmentations as aug
from net import device_aug as dev
from net import geometry as geo
from utils.errors import UserError


@pytest.mark.parametrize('name', sorted(geo.PRESETS))
def test_every_part_of_a_preset_works_at_its_size(name):
    g = geo.PRESETS[name]
    s = g.size
    img = np.random.default_rng(0).integers(0, 256, (101, 101), dtype=np.uint8)
    out = geo.build_train_aug(name, seed=0)(image=img, mask=(img > 128).astype(np.uint8))
    assert out['image'].shape == out['mask'].shape == (s, s)
    x = torch.rand(2, 1, 101, 101)
    y = aug.build_val_aug(g.val)(x)
    assert y.shape == (2, 1, s, s)
    assert aug.build_back_transform(g.back)(y).shape == x.shape
    twin = dev.build_device_aug(g.device)
    images = torch.from_numpy(np.stack([img, img]))[:, None]
    x01, t = twin(images, (images > 128).to(torch.uint8), torch.Generator().manual_seed(0))
    assert x01.shape == t.shape == (2, 1, s, s)


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        geo.PRESETS['train_128_v1'].size = 256


def test_every_validation_input_names_its_back_transform_and_size():
    assert {v: (geo.of_val(v).back, geo.of_val(v).size) for v in aug.VAL_AUGS} == {
        'val_128': ('crop_from_128', 128), 'val_128_resize': ('resize_from_any', 128),
        'val_256': ('crop_resize_from_256', 256), 'val_112': ('crop_from_112', 112)}
    # Presets that share a validation input agree on what undoes it and on the size.
    for g in geo.PRESETS.values():
        assert (geo.of_val(g.val).back, geo.of_val(g.val).size) == (g.back, g.size)


def test_train_augs_alone_fixes_the_inputs():
    assert geo.run_inputs('train_128_v1') == ('val_128_resize', 'resize_from_any')
    assert geo.run_inputs('train_128_v3') == ('val_128', 'crop_from_128')
    assert geo.run_inputs('train_256_v1') == ('val_256', 'crop_resize_from_256')
    assert geo.run_inputs('train_112_v3') == ('val_112', 'crop_from_112')


def test_overrides_that_fit_are_taken():
    # The original's commands name all three.
    assert geo.run_inputs('train_128_v1', 'val_128_resize', 'resize_from_any') == ('val_128_resize', 'resize_from_any')
    # Another placement at the same size, with the back-transform that undoes it.
    assert geo.run_inputs('train_128_v1', 'val_128') == ('val_128', 'crop_from_128')
    assert geo.run_inputs('train_128_v3', val_transforms='crop_from_128') == ('val_128', 'crop_from_128')


@pytest.mark.parametrize('args, phrases', [
    (('train_128_v1', 'val_256'), ['--val_augs val_256 gives 256x256', '--train_augs train_128_v1', '128x128',
                                   'val_128 or val_128_resize', 'leave --val_augs out']),
    (('train_112_v3', 'val_128'), ['--val_augs val_128 gives 128x128', '112x112', 'pass --val_augs val_112']),
    (('train_128_v3', None, 'resize_from_any'), ['--val_transforms resize_from_any does not undo --val_augs val_128',
                                                 'pass --val_transforms crop_from_128']),
    (('train_128_v1', 'val_128', 'resize_from_any'), ['does not undo --val_augs val_128']),
])
def test_overrides_that_do_not_fit_are_one_line_errors(args, phrases):
    with pytest.raises(UserError) as e:
        geo.run_inputs(*args)
    msg = str(e.value)
    assert '\n' not in msg
    for phrase in phrases:
        assert phrase in msg, msg


def test_unknown_names_are_user_errors():
    for call in (lambda: geo.preset('train_999'), lambda: geo.run_inputs('train_128_v1', 'val_999'),
                 lambda: geo.run_inputs('train_128_v1', None, 'back_999')):
        with pytest.raises(UserError, match='choose one of'):
            call()


def test_snapshot_transforms_and_their_overrides():
    from net.inference import transforms_for
    snap = {'val_augs': 'val_128', 'val_transforms': 'crop_from_128'}
    assert transforms_for(snap) == (aug.val_128, aug.crop_from_128)
    # An overriding input brings the back-transform that undoes it.
    assert transforms_for(snap, 'val_128_resize') == (aug.val_128_resize, aug.resize_from_any)
    with pytest.raises(UserError, match='gives 256x256 inputs but the snapshot'):
        transforms_for(snap, 'val_256')
    with pytest.raises(UserError, match='does not undo --val_augs val_128'):
        transforms_for(snap, val_transforms='resize_from_any')
    # A snapshot's own names are taken as they are (earlier versions' snapshots predict unchanged).
    old = {'val_augs': 'val_256', 'val_transforms': 'crop_resize_from_256'}
    assert transforms_for(old) == (aug.val_256, aug.crop_resize_from_256)


def test_every_preset_has_one_input_name():
    assert sorted(geo.INPUTS.values()) == sorted(geo.PRESETS)
    for name, train_augs in geo.INPUTS.items():
        assert geo.input_name(train_augs) == name


def test_input_option_is_train_augs_by_its_geometry(capsys):
    from net.training import build_config, parse_args
    a = parse_args(['--input', 'pad128', '--experiment_dir', 'x'])
    assert a.train_augs == 'train_128_v3' and 'train_augs' in a.given
    config = build_config(a, quiet=True).record()
    assert config['input'] == 'pad128' and (config['val_augs'], config['val_transforms']) == ('val_128', 'crop_from_128')
    # the two names of one choice: the later one on the command line wins, as for any repeated option
    assert parse_args(['--input', 'pad112', '--train_augs', 'train_256_v1', '--experiment_dir', 'x']).train_augs == 'train_256_v1'
    assert parse_args(['--train_augs', 'train_256_v1', '--input', 'pad112', '--experiment_dir', 'x']).train_augs == 'train_112_v3'
    assert parse_args(['--experiment_dir', 'x']).train_augs == 'train_128_v1'  # the original's default: resize128
    with pytest.raises(SystemExit) as e:
        parse_args(['--input', 'pad100', '--experiment_dir', 'x'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'pad100' in err and 'resize202_pad256' in err and len(err.strip().splitlines()) == 1
