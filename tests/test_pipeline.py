"""The original README's commands, run as a user runs them, on a cut of the real data."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, cut_real, run_main
from utils.rle import rle_decode
from utils.snapshots import best_snapshot_of

pytestmark = pytest.mark.slow

FAST = ['--pretrained', 'none', '--n_epochs', '1', '--batch_size', '4', '--limit', '8', '--fold', '0']


def command(args, check=True, timeout=600):
    """A script run as a user types it: its own process, from the root."""
    r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stderr[-3000:]}"
    return r


run = run_main  # everywhere but the original README's commands: the script's main(argv), in this process


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A stacked, folded cut of the real data: 160 train and 32 test images."""
    d = cut_real(tmp_path_factory.mktemp('real') / 'data', 160, 32)
    command(['utils/stack_and_save.py', '--data_dir', d])
    command(['utils/make_folds.py', '--p', d / 'train.csv', '--n', '4'])
    return d


@pytest.fixture(scope='module')
def few_test_images(tmp_path_factory):
    """The same kind of cut with 8 test images, for the wide_resnet_v1 commands (each test image is
    three wide_resnet forward passes there)."""
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    d = cut_real(tmp_path_factory.mktemp('real') / 'data', 64, 8)
    stack(['--data_dir', str(d), '--workers', '1'])
    make_folds(['--p', str(d / 'train.csv'), '--n', '4'])
    return d


def snapshots(exp):
    from utils.snapshots import snapshots_of
    return sorted(s.path for s in snapshots_of(exp))


def check_submission(csv, data):
    sub = pd.read_csv(csv, dtype=str, keep_default_na=False)
    ids = pd.read_csv(data / 'sample_submission.csv', dtype=str)['id']
    assert list(sub.columns) == ['id', 'rle_mask']
    assert list(sub['id']) == list(ids)
    for r in sub['rle_mask']:
        rle_decode(r)  # raises on a malformed string
    return sub


@pytest.mark.real_data
def test_original_readme_commands(few_test_images, tmp_path):
    """stack → folds → train → threshold → predict → TTA → fold average, with the README's options,
    each in its own process as a user runs them (the subprocess smoke of these scripts)."""
    data = few_test_images
    exp = tmp_path / 'experiments' / 'wide_fold0_128'
    command(['train.py', '--arch', 'wide_resnet_v1', '--batch_size=8', '--loss', 'BCE', '--optimizer', 'adam_1e-4',
         '--experiment_dir', exp, '--n_epochs', '1', '--train_augs', 'train_128_v1', '--val_augs', 'val_128_resize',
         '--val_transforms', 'resize_from_any', '--fold', '0', '--data_dir', data, '--pretrained', 'none', '--limit', '16'])
    assert (exp / 'train_config.json').is_file()
    log = pd.read_csv(exp / 'logs' / 'log.csv')
    assert list(log['epoch']) == [1]
    assert {'train_loss', 'val_loss', 'val_iou', 'val_score', 'lr', 'seconds'} <= set(log.columns)
    snap = snapshots(exp)[-1]
    masks = snap.parent / f'val_masks_{snap.name}.npy'
    assert np.load(masks).shape == (4, 101, 101)
    out = command(['optimize_threshold.py', '--masks_fn', masks]).stdout
    assert 'best threshold' in out.splitlines()[-1]
    command(['predict.py', '--snapshot', snap, '--th', '0.51', '--arch', 'wide_resnet_v1'])
    csv = exp / 'predictions' / f'{snap.name}.csv'
    check_submission(csv, data)
    probs = np.load(csv.with_suffix('.npy'))
    assert probs.shape == (8, 101, 101) and np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    command(['predict_tta.py', '--snapshot', snap, '--th', '0.5', '--tta', 'null_hflip'])
    tta = exp / 'predictions' / f'{snap.name}.tta_null_hflip.npy'
    avg = tmp_path / 'avg.csv'
    command(['predict_fold_avg.py', csv.with_suffix('.npy'), tta, '--th', '0.5', '--data_dir', data, '--out', avg])
    sub = check_submission(avg, data)
    mean = (probs.astype(np.float32) + np.load(tta).astype(np.float32)) / 2
    from utils.rle import rle_encode
    assert list(sub["rle_mask"]) == [rle_encode(m > 0.5) for m in mean]


@pytest.mark.real_data
def test_short_training_learns_and_predicts(data, tmp_path):
    """A few epochs of the small net on 120 real images beat the all-empty answer on validation."""
    exp = tmp_path / 'lite'
    run(['train.py', '--arch', 'unet_lite', '--loss', 'bce_lovasz', '--optimizer', 'adam_1e-3', '--n_epochs', '4',
         '--batch_size', '8', '--train_augs', 'train_128_v3', '--val_augs', 'val_128', '--val_transforms',
         'crop_from_128', '--data_dir', data, '--pretrained', 'none', '--experiment_dir', exp])
    log = pd.read_csv(exp / 'logs' / 'log.csv')
    assert list(log['epoch']) == [1, 2, 3, 4]
    assert log['train_loss'].iloc[-1] < log['train_loss'].iloc[0]
    snap = best_snapshot_of(exp)
    run(['predict.py', '--snapshot', snap])
    check_submission(exp / 'predictions' / f'{snap.name}.csv', data)


def train_in_process(script, argv):
    """Run train.py's or train_border.py's main in this process (one torch import for all the runs)."""
    import train
    import train_border
    module = train_border if script == 'train_border.py' else train
    return module.main([str(a) for a in argv])


def registered():
    from train import registries
    return registries()


# One architecture per output contract trains through its script (test_models.py steps every
# architecture, and checks that these contracts are all there are); the loss a contract needs.
TRAINED_CONTRACTS = {
    frozenset({'mask'}): ('unet_plain_w8', 'train.py', 'BCE'),
    frozenset({'mask', 'aux', 'salt'}): ('unet_plain_ds', 'train.py', 'combined'),
    frozenset({'mask', 'border'}): ('unet_lite_border', 'train_border.py', 'boundary_bce'),
}


@pytest.mark.real_data
@pytest.mark.parametrize('keys', sorted(TRAINED_CONTRACTS, key=sorted), ids=lambda k: '+'.join(sorted(k)))
def test_every_output_contract_trains(data, tmp_path, keys):
    from net.models import build_model
    arch, script, loss = TRAINED_CONTRACTS[keys]
    assert build_model(arch).output_keys == keys
    exp = tmp_path / arch
    train_in_process(script, ['--arch', arch, '--loss', loss, '--data_dir', data, '--experiment_dir', exp] + FAST)
    snap = snapshots(exp)[-1]
    assert np.load(snap.parent / f'val_masks_{snap.name}.npy').shape == (2, 101, 101)


@pytest.mark.real_data
@pytest.mark.parametrize('loss', sorted(registered()['loss']))
def test_every_loss_trains(data, tmp_path, loss):
    from net.losses import build_loss
    needs = build_loss(loss).requires
    script, arch = 'train.py', 'unet_lite'
    if 'border' in needs:
        script, arch = 'train_border.py', 'unet_lite_border'
    elif 'aux' in needs or 'salt' in needs:
        arch = 'unet_lite_ds'
    exp = tmp_path / loss
    train_in_process(script, ['--arch', arch, '--loss', loss, '--data_dir', data, '--experiment_dir', exp] + FAST)
    assert snapshots(exp)


@pytest.mark.real_data
@pytest.mark.parametrize('kind', ['optimizer', 'scheduler'])
def test_every_optimizer_and_scheduler_trains(data, tmp_path, kind):
    for name in sorted(registered()[kind]):
        exp = tmp_path / name
        train_in_process('train.py', ['--arch', 'unet_lite', f'--{kind}', name, '--data_dir', data, '--experiment_dir', exp] + FAST)
        assert snapshots(exp), name


@pytest.mark.real_data
@pytest.mark.parametrize('train_augs', sorted(registered()['train_augs']))
def test_every_augmentation_trains(data, tmp_path, train_augs):
    exp = tmp_path / train_augs
    # --train_augs alone fixes the validation input and its back-transform.
    train_in_process('train.py', ['--arch', 'unet_lite', '--train_augs', train_augs, '--data_dir', data,
                                  '--experiment_dir', exp] + FAST)
    snap = snapshots(exp)[-1]
    assert np.load(snap.parent / f'val_masks_{snap.name}.npy').shape == (2, 101, 101)


@pytest.mark.real_data
def test_snapshot_ensemble(data, tmp_path):
    exp = tmp_path / 'se'
    run(['train.py', '--arch', 'unet_lite', '--cycles', '2', '--scheduler', 'cosine', '--n_epochs', '4',
         '--batch_size', '8', '--limit', '16', '--data_dir', data, '--pretrained', 'none', '--experiment_dir', exp])
    assert {p.parent.name for p in snapshots(exp)} == {'cycle_0', 'cycle_1'}
    out = command(['predict_se.py', '--snapshot_dir', exp / 'snapshots', '--th', '0.5']).stdout
    assert 'cycle 0:' in out and 'cycle 1:' in out
    check_submission(exp / 'predictions' / 'snapshot_ensemble.csv', data)


@pytest.mark.real_data
def test_swa_saves_the_averaged_model(data, tmp_path):
    """--swa 0.5 of 4 epochs averages epochs 3 and 4, re-estimates BatchNorm and saves a usable snapshot."""
    import torch
    exp = tmp_path / 'swa'
    out = run(['train.py', '--arch', 'unet_plain_w8', '--swa', '0.5', '--n_epochs', '4', '--batch_size', '8',
               '--limit', '16', '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms',
               'crop_from_112', '--data_dir', data, '--pretrained', 'none', '--experiment_dir', exp]).stdout
    assert 'SWA of 2 epochs' in out
    swa = [p for p in snapshots(exp) if p.parent.name == 'swa']
    assert len(swa) == 1 and swa[0].name.startswith('epoch_4.')
    assert np.load(swa[0].parent / f'val_masks_{swa[0].name}.npy').shape == (4, 101, 101)
    # the averaged weights differ from both epochs' weights, and BatchNorm statistics were recomputed
    ckpt = torch.load(exp / 'checkpoint.pth', weights_only=False)
    assert int(ckpt['swa']['n_averaged']) == 2
    avg = torch.load(swa[0], weights_only=True)['model']
    last = ckpt['model']
    name = next(k for k in avg if k.endswith('conv.weight') or k.endswith('0.weight'))
    assert not torch.equal(avg[name], last[name])
    torch.testing.assert_close(avg[name], ckpt['swa']['module.' + name])
    run(['optimize_threshold.py', '--masks_fn', swa[0].parent / f'val_masks_{swa[0].name}.npy'])
    run(['predict.py', '--snapshot', swa[0]])
    check_submission(exp / 'predictions' / f'{swa[0].name}.csv', data)
    bad = run(['train.py', '--swa', '1.5', '--data_dir', data, '--experiment_dir', tmp_path / 'x'], check=False)
    assert bad.returncode == 2 and '--swa is the share' in bad.stderr


@pytest.mark.real_data
def test_experiment_dir_and_auto_options(data, tmp_path):
    """EXP stands for its best snapshot; --th/--min_size auto take what optimize_threshold.py found."""
    import json
    exp = tmp_path / 'auto'
    run(['train.py', '--arch', 'unet_plain_w8', '--n_epochs', '3', '--batch_size', '8', '--limit', '16',
         '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms', 'crop_from_112',
         '--optimizer', 'adam_1e-3', '--data_dir', data, '--pretrained', 'none', '--experiment_dir', exp])
    best = best_snapshot_of(exp)
    # before the search, auto is a one-line error that names the command to run
    r = run(['predict_tta.py', '--snapshot', exp, '--th', 'auto'], check=False)
    assert r.returncode == 2 and 'optimize_threshold.py --masks_fn' in r.stderr and 'Traceback' not in r.stderr
    out = run(['optimize_threshold.py', '--masks_fn', exp]).stdout
    assert f'best snapshot of {exp}: {best}' in out
    found = json.loads((best.parent / f'val_masks_{best.name}.best.json').read_text())
    assert 0 <= found['threshold'] <= 1 and found['min_size'] >= 0
    assert found['score_with_min_size'] >= found['score']
    out = run(['predict_tta.py', '--snapshot', exp, '--th', 'auto', '--min_size', 'auto']).stdout
    assert f"--th {found['threshold']:.2f} --min_size {found['min_size']}" in out
    sub = check_submission(exp / 'predictions' / f'{best.name}.tta_null_hflip.csv', data)
    probs = np.load(exp / 'predictions' / f'{best.name}.tta_null_hflip.npy').astype(np.float32)
    from utils.rle import rle_encode
    from utils.submission import binarize
    assert list(sub['rle_mask']) == [rle_encode(m) for m in binarize(probs, found['threshold'], found['min_size'])]
    # --init EXP fine-tunes from the same best snapshot
    run(['train.py', '--arch', 'unet_plain_w8', '--init', exp, '--loss', 'lovasz', '--n_epochs', '1', '--batch_size', '8',
         '--limit', '16', '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms', 'crop_from_112',
         '--data_dir', data, '--pretrained', 'none', '--experiment_dir', tmp_path / 'ft'])
    assert json.loads((tmp_path / 'ft' / 'train_config.json').read_text())['init'] == str(best.resolve())


@pytest.mark.real_data
def test_bf16_autocast_on_cpu(data, tmp_path):
    """--amp bf16 trains and predicts on the CPU; its probabilities stay close to the fp32 ones."""
    exp = tmp_path / 'bf16'
    r = run(['train.py', '--arch', 'unet_plain_w8', '--amp', 'bf16', '--n_epochs', '2', '--batch_size', '8',
             '--limit', '16', '--train_augs', 'train_112_v3', '--val_augs', 'val_112', '--val_transforms',
             'crop_from_112', '--optimizer', 'adam_1e-3', '--data_dir', data, '--pretrained', 'none',
             '--experiment_dir', exp])
    from net.runtime import cpu_has_native_bf16
    native = cpu_has_native_bf16()
    assert ('without native bfloat16' in r.stderr) == (not native)
    log = pd.read_csv(exp / 'logs' / 'log.csv')
    assert list(log['epoch']) == [1, 2] and np.isfinite(log['train_loss']).all()
    snap = snapshots(exp)[-1]
    run(['predict.py', '--snapshot', snap, '--amp', 'bf16', '--out', tmp_path / 'bf.csv'])
    run(['predict.py', '--snapshot', snap, '--out', tmp_path / 'fp.csv'])
    check_submission(tmp_path / 'bf.csv', data)
    bf = np.load(tmp_path / 'bf.npy').astype(np.float32)
    fp = np.load(tmp_path / 'fp.npy').astype(np.float32)
    assert bf.shape == fp.shape == (32, 101, 101)
    assert 0 < np.abs(bf - fp).mean() < 0.02


@pytest.mark.real_data
def test_cycles_split_the_time_budget(data, tmp_path):
    """--cycles 2 with --schedule_by time: each half of the budget restarts the cosine and keeps its own best."""
    exp = tmp_path / 'cycles'
    command(['train.py', '--arch', 'unet_plain_w8', '--cycles', '2', '--max_minutes', '0.15', '--schedule_by', 'time',
         '--n_epochs', '1000', '--batch_size', '8', '--limit', '16', '--train_augs', 'train_112_v3', '--val_augs',
         'val_112', '--val_transforms', 'crop_from_112', '--optimizer', 'adam_1e-3', '--data_dir', data,
         '--pretrained', 'none', '--experiment_dir', exp])
    log = pd.read_csv(exp / 'logs' / 'log.csv')
    assert list(log['cycle'].unique()) == [0, 1]
    first_of_1 = log.index[log['cycle'] == 1][0]
    # each cycle anneals from the base rate: the rate falls within cycle 0 and rises again where cycle 1 starts
    # (the logged rate is the one at an epoch's end, so how far it fell depends on the machine's speed)
    assert log['lr'].max() <= 1e-3 + 1e-12
    assert log['lr'][first_of_1 - 1] < log['lr'][0] or first_of_1 == 1
    assert log['lr'][first_of_1] > log['lr'][first_of_1 - 1]
    assert {p.parent.name for p in snapshots(exp)} == {'cycle_0', 'cycle_1'}


@pytest.mark.real_data
def test_border_model_saves_border_output(data, tmp_path):
    exp = tmp_path / 'border'
    command(['train_border.py', '--arch', 'unet_lite_border', '--loss', 'boundary_lovasz', '--data_dir', data,
             '--experiment_dir', exp] + FAST)  # train_border.py's subprocess smoke
    snap = snapshots(exp)[-1]
    run(['predict.py', '--snapshot', snap])
    border = exp / 'predictions' / f'{snap.name}.border.npy'
    assert np.load(border).shape == (32, 101, 101)


def test_help_lists_every_name():
    out = run(['train.py', '--help']).stdout
    for kind, names in registered().items():
        for name in names:
            assert name in out, (kind, name)
    assert 'null_hflip' in run(['predict_tta.py', '--help']).stdout
