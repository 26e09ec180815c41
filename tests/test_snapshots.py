"""utils/snapshots.py owns snapshot names: writing, parsing, listing, best-of (one tie rule) and roots."""
import math
from pathlib import Path

import pytest

from utils.checkpoint import find_config
from utils.errors import UserError
from utils.run_folder import Experiment
from utils.snapshots import (Snapshot, best_json_path, best_of, best_per_cycle, best_snapshot_of, ensemble_paths,
                             experiment_root, prediction_path, snapshot_name, snapshot_score, snapshots_in,
                             snapshots_of, val_masks_path)


def touch(path, text='x'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_run(root, names_by_folder):
    """An experiment with train_config.json and empty snapshot files (plus their masks) in the given folders."""
    touch(root / 'train_config.json', '{"fold": 0}')
    out = {}
    for folder, names in names_by_folder.items():
        d = root / 'snapshots' / folder if folder else root / 'snapshots'
        for n in names:
            out[(folder, n)] = touch(d / n)
            touch(val_masks_path(d / n))
            touch(best_json_path(val_masks_path(d / n)), '{}')
    return out


def test_names_round_trip():
    name = snapshot_name(12, 0.30123, 0.8014)
    assert name == 'epoch_12.loss_0.3012.iout_0.801'
    s = Snapshot.parse(Path('exp/snapshots') / name)
    assert (s.epoch, s.loss, s.score) == (12, 0.3012, 0.801)
    assert s.masks == Path('exp/snapshots/val_masks_epoch_12.loss_0.3012.iout_0.801.npy')
    assert snapshot_score(s.path) == (0.801, 12)
    odd = Snapshot.parse(snapshot_name(3, float('nan'), 0.5))
    assert odd.epoch == 3 and math.isnan(odd.loss)
    assert Snapshot.parse(snapshot_name(4, -0.25, 0.5)).loss == -0.25
    # what lies beside snapshots is not one
    for other in ('val_masks_epoch_12.loss_0.3012.iout_0.801.npy', 'val_masks_epoch_12.loss_0.3012.iout_0.801.best.json',
                  '.epoch_12.loss_0.3012.iout_0.801.tmp77@host', 'epoch_12.loss_0.3012.iout_0.801.npy',
                  'snapshot_ensemble.best.json', 'epoch_x.loss_1.iout_2'):
        assert Snapshot.parse(other) is None, other
        assert snapshot_score(other) == (-1.0, -1)


def test_equal_scores_the_later_epoch_wins_everywhere(tmp_path):
    exp = tmp_path / 'exp'
    tie = ['epoch_2.loss_0.4000.iout_0.700', 'epoch_5.loss_0.4500.iout_0.700', 'epoch_3.loss_0.3000.iout_0.650']
    files = make_run(exp, {'cycle_0': tie, 'cycle_1': ['epoch_7.loss_0.3000.iout_0.690', 'epoch_9.loss_0.3500.iout_0.690']})
    assert best_of(snapshots_in(exp / 'snapshots' / 'cycle_0')).epoch == 5
    assert best_of([]) is None
    # the whole run: cycle 0's later tie beats cycle 1's lower score
    assert best_snapshot_of(exp) == files[('cycle_0', tie[1])]
    # the snapshot ensemble's choice per cycle follows the same rule
    assert best_per_cycle(exp) == [(0, files[('cycle_0', tie[1])]),
                                   (1, files[('cycle_1', 'epoch_9.loss_0.3500.iout_0.690')])]
    assert best_per_cycle(exp / 'snapshots') == best_per_cycle(exp)
    # and so does pruning: the two kept of cycle 0 are the tie
    Experiment(exp).prune_snapshots(exp / 'snapshots' / 'cycle_0', 2)
    assert sorted(s.epoch for s in snapshots_in(exp / 'snapshots' / 'cycle_0')) == [2, 5]


def test_listing_sees_snapshots_only(tmp_path):
    exp = tmp_path / 'exp'
    make_run(exp, {'': ['epoch_1.loss_0.5000.iout_0.500', 'epoch_10.loss_0.4000.iout_0.600'],
                   'swa': ['epoch_12.loss_0.3000.iout_0.550']})
    touch(exp / 'snapshots' / 'snapshot_ensemble.best.json', '{}')
    touch(exp / 'snapshots' / '.epoch_11.loss_0.3000.iout_0.900.tmp5@h')
    (exp / 'snapshots' / 'epoch_99.loss_0.1000.iout_0.990').mkdir()  # a folder is no snapshot
    assert [s.epoch for s in snapshots_in(exp / 'snapshots')] == [1, 10]
    assert sorted(s.epoch for s in snapshots_of(exp)) == [1, 10, 12]
    assert {s.cycle for s in snapshots_of(exp)} == {None, 'swa'}
    assert best_snapshot_of(exp).name == 'epoch_10.loss_0.4000.iout_0.600'


def test_a_better_swa_snapshot_is_the_best(tmp_path):
    exp = tmp_path / 'exp'
    files = make_run(exp, {'': ['epoch_3.loss_0.5000.iout_0.500'], 'swa': ['epoch_3.loss_0.4000.iout_0.700']})
    assert best_snapshot_of(exp) == files[('swa', 'epoch_3.loss_0.4000.iout_0.700')]


@pytest.mark.parametrize('folder', ['', 'cycle_0', 'cycle_12', 'swa'])
def test_root_of_nested_snapshots(tmp_path, folder):
    exp = tmp_path / 'experiments' / 'se_fold0'
    name = 'epoch_4.loss_0.3000.iout_0.700'
    snap = next(iter(make_run(exp, {folder: [name]}).values()))
    s = Snapshot.parse(snap)
    assert experiment_root(snap) == s.root == exp
    assert experiment_root(s.masks) == exp
    assert find_config(snap)[1] == exp.resolve()
    assert prediction_path(snap) == exp / 'predictions' / f'{name}.csv'
    assert prediction_path(snap, '.tta_null_hflip') == exp / 'predictions' / f'{name}.tta_null_hflip.csv'
    assert s.cycle == {'': None, 'cycle_0': 0, 'cycle_12': 12, 'swa': 'swa'}[folder]


def test_root_of_a_stray_snapshot_is_its_folder(tmp_path):
    snap = touch(tmp_path / 'downloads' / 'epoch_4.loss_0.3000.iout_0.700')
    assert experiment_root(snap) == tmp_path / 'downloads'
    assert prediction_path(snap) == tmp_path / 'downloads' / 'predictions' / f'{snap.name}.csv'


def test_ensemble_paths_and_missing_folders(tmp_path):
    exp = tmp_path / 'exp'
    make_run(exp, {'cycle_0': ['epoch_1.loss_0.5000.iout_0.500']})
    for given in (exp, exp / 'snapshots'):
        assert ensemble_paths(given) == (exp / 'predictions' / 'snapshot_ensemble.csv',
                                         exp / 'snapshots' / 'snapshot_ensemble.best.json')
    with pytest.raises(UserError, match='snapshot folder not found'):
        best_per_cycle(tmp_path / 'nowhere')
    plain = tmp_path / 'plain'
    make_run(plain, {'': ['epoch_1.loss_0.5000.iout_0.500']})
    with pytest.raises(UserError, match='no cycle_k folders'):
        best_per_cycle(plain)
    (tmp_path / 'empty' / 'snapshots' / 'cycle_0').mkdir(parents=True)
    with pytest.raises(UserError, match='no snapshots in the cycle folders'):
        best_per_cycle(tmp_path / 'empty')
    with pytest.raises(UserError, match='has no snapshots/epoch_'):
        best_snapshot_of(tmp_path / 'empty')


def test_saved_snapshot_names_parse_back(tmp_path):
    """Experiment.save_snapshot writes the name that Snapshot.parse reads (cycles and swa folders too)."""
    import numpy as np
    exp = Experiment(tmp_path / 'exp')
    config = {'arch': 'unet_lite', 'fold': 0, 'cycles': 2, 'val_augs': 'val_128', 'val_transforms': 'crop_from_128'}
    metrics = {'val_loss': 0.123456, 'val_score': 0.6789, 'val_iou': 0.5}
    probs = np.zeros((2, 101, 101), np.float32)
    a = exp.save_snapshot({}, config, 7, 1, metrics, probs)
    b = exp.save_snapshot({}, config, 8, 'swa', metrics, probs)
    assert (Snapshot.parse(a).epoch, Snapshot.parse(a).score, Snapshot.parse(a).cycle) == (7, 0.679, 1)
    assert Snapshot.parse(b).cycle == 'swa' and Snapshot.parse(b).masks.is_file()
