"""train_folds.py and the out-of-fold threshold, run as a user runs them on a cut of the real data."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, stacked_cut
from utils.errors import UserError

FAST = ['--arch', 'unet_plain_w8', '--batch_size', '8', '--limit', '16', '--train_augs', 'train_112_v3',
        '--val_augs', 'val_112', '--val_transforms', 'crop_from_112', '--pretrained', 'none', '--threads', '1',
        '--optimizer', 'adam_1e-3']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('folds') / 'data', 64, 8)


def run(args, check=True, cwd=ROOT, timeout=600):
    r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def logged_epochs(exp):
    try:
        return list(pd.read_csv(exp / 'logs' / 'log.csv')['epoch'])
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


def children(pid):
    """Process ids of the children of `pid` (started from any of its threads)."""
    out = []
    for task in Path(f'/proc/{pid}/task').iterdir():
        try:
            out += [int(x) for x in (task / 'children').read_text().split()]
        except FileNotFoundError:
            pass
    return out


def oof_from_scratch(dirs):
    """The out-of-fold search done by hand: every fold's best validation masks and true masks together."""
    from utils.metric import threshold_sweep
    from utils.snapshots import best_snapshot_of, val_masks_path
    from utils.thresholds import true_masks_for
    probs = [np.load(val_masks_path(best_snapshot_of(d))).astype(np.float32) for d in dirs]
    true = [true_masks_for(val_masks_path(best_snapshot_of(d))) for d in dirs]
    ths = np.linspace(0, 1, 101)
    sweep = threshold_sweep(np.concatenate(probs), np.concatenate(true), ths)
    return probs, true, ths[int(np.argmax(sweep))], float(sweep.max())


@pytest.mark.real_data
@pytest.mark.slow
def test_a_killed_fold_is_reported_then_resumed_and_the_folds_predict_together(data, tmp_path):
    """A fold killed mid-run (as the OOM killer would) fails alone; the same command again resumes it,
    skips the finished fold, searches the out-of-fold threshold and writes the fold-averaged submission."""
    from utils.metric import score
    from utils.rle import rle_encode
    from utils.submission import binarize
    exp = tmp_path / 'experiments' / 'plain'
    dirs = [tmp_path / 'experiments' / f'plain_fold{k}' for k in (0, 1)]
    cmd = [sys.executable, 'train_folds.py', '--folds', '0-1', '--experiment_dir', str(exp), *FAST, '--n_epochs', '3',
           '--data_dir', str(data)]
    with open(tmp_path / 'first.out', 'w') as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not logged_epochs(dirs[0]):
            assert proc.poll() is None, (tmp_path / 'first.out').read_text()[-2000:]
            assert time.monotonic() < deadline, "fold 0 logged no epoch in time"
            time.sleep(0.02)
        (victim,) = children(proc.pid)
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    first = (tmp_path / 'first.out').read_text()
    assert proc.returncode == 1, err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith('train_folds.py: error: fold 0 failed training (killed by SIGKILL; log ') and 'fold 1' not in err, err
    assert str(dirs[0] / 'train_folds.log') in err
    # fold 1 still ran and finished; fold 0 kept its checkpoint; no threshold search without every fold
    assert 'fold 1: training' in first
    assert json.loads((dirs[1] / 'summary.json').read_text())['finished'] is True
    assert logged_epochs(dirs[1]) == [1, 2, 3]
    assert (dirs[0] / 'checkpoint.pth').is_file() and not (dirs[0] / 'summary.json').exists()
    assert not list((tmp_path / 'experiments').glob('*.oof.*'))

    r = run([*cmd[1:], '--predict'])
    assert 'fold 0: resuming' in r.stdout and f"fold 1: finished ({dirs[1] / 'summary.json'}), skipped" in r.stdout
    assert logged_epochs(dirs[0]) == [1, 2, 3] and (dirs[0] / 'summary.json').is_file()
    assert 'out-of-fold' in r.stdout
    log = (dirs[0] / 'train_folds.log').read_text()
    assert log.count('=== ') == 3 and 'fold 0: resuming' in log  # training, resuming, predicting

    found = json.loads((tmp_path / 'experiments' / 'plain.oof.best.json').read_text())
    probs, true, th, best = oof_from_scratch(dirs)
    assert found['out_of_fold'] is True and found['images'] == sum(map(len, true)) == 8
    assert found['threshold'] == round(th, 6) and found['score'] == pytest.approx(best)
    for f, p, t, d in zip(found['folds'], probs, true, dirs):
        assert f['experiment'] == str(d) and f['score'] == pytest.approx(score(p > th, t))
        assert f"fold {f['fold']}: {f['score']:.4f} at the out-of-fold threshold {th:.2f}" in r.stdout
    assert (tmp_path / 'experiments' / 'plain.oof.thresholds.csv').is_file()

    sub_path = tmp_path / 'experiments' / 'plain.submission.csv'
    npys = sorted(tmp_path.glob('experiments/plain_fold*/predictions/*.tta_null_hflip.npy'))
    assert len(npys) == 2
    mean = sum(np.load(f).astype(np.float32) for f in npys) / 2
    sub = pd.read_csv(sub_path, dtype=str, keep_default_na=False)
    assert list(sub['id']) == list(pd.read_csv(data / 'sample_submission.csv', dtype=str)['id'])
    assert list(sub['rle_mask']) == [rle_encode(m) for m in binarize(mean, found['threshold'], found['min_size'])]
    # predict_fold_avg.py --th auto finds the same out-of-fold result by itself and writes the same file
    again = run(['predict_fold_avg.py', *npys, '--th', 'auto', '--min_size', 'auto', '--data_dir', data,
                 '--out', tmp_path / 'again.csv'])
    assert f"--th {found['threshold']:.2f} --min_size {found['min_size']}" in again.stdout
    assert (tmp_path / 'again.csv').read_bytes() == sub_path.read_bytes()


@pytest.mark.real_data
@pytest.mark.slow
def test_folds_side_by_side_with_a_fold_placeholder(data, tmp_path):
    """--jobs 2 runs two folds at once (their lines prefixed); {fold} names the directories; the
    out-of-fold search also runs from optimize_threshold.py, and its one-fold mode is unchanged."""
    exp = tmp_path / 'par' / 'fold{fold}'
    # 4 epochs: each fold trains well past the other's start-up, also with one thread a core under pytest-xdist
    r = run(['train_folds.py', '--folds', '0,1', '--jobs', '2', '--experiment_dir', exp, *FAST, '--n_epochs', '4',
             '--data_dir', data])
    dirs = [tmp_path / 'par' / 'fold0', tmp_path / 'par' / 'fold1']
    for k, d in enumerate(dirs):
        assert logged_epochs(d) == [1, 2, 3, 4]
        assert f'[fold {k}] epoch 4/4' in r.stdout
    # side by side: each fold started before the other one finished
    started = [(d / 'train_config.json').stat().st_mtime for d in dirs]
    ended = [(d / 'summary.json').stat().st_mtime for d in dirs]
    assert started[0] < ended[1] and started[1] < ended[0]
    oof = json.loads((tmp_path / 'par' / 'oof.best.json').read_text())

    from utils.snapshots import best_snapshot_of, val_masks_path
    masks1 = val_masks_path(best_snapshot_of(dirs[1]))
    out = run(['optimize_threshold.py', '--masks_fn', dirs[0], masks1, '--out', tmp_path / 'mine.json']).stdout
    mine = json.loads((tmp_path / 'mine.json').read_text())
    assert {k: mine[k] for k in ('threshold', 'score', 'min_size')} == {k: oof[k] for k in ('threshold', 'score', 'min_size')}
    assert 'out-of-fold    fold 0    fold 1' in out and out.splitlines()[-1].startswith('best out-of-fold threshold')
    assert 'by salt coverage' in out
    curve = pd.read_csv(tmp_path / 'mine.thresholds.csv')
    assert list(curve.columns) == ['threshold', 'score', 'fold 0', 'fold 1'] and len(curve) == 101
    n = [f['images'] for f in mine['folds']]
    assert np.allclose(curve['score'], (curve['fold 0'] * n[0] + curve['fold 1'] * n[1]) / sum(n))
    assert not list(masks1.parent.glob('*.best.json'))  # out of fold writes nothing beside the masks
    # one fold, no --out: the original behaviour, .best.json beside the masks file
    single = run(['optimize_threshold.py', '--masks_fn', masks1]).stdout
    assert single.splitlines()[-1].startswith('best threshold')
    assert json.loads(masks1.with_name(masks1.stem + '.best.json').read_text())['masks'] == str(masks1)


def test_fold_lists_directories_and_default_paths(tmp_path, monkeypatch):
    from utils.folds import fold_dir, parse_folds
    from utils.thresholds import default_oof_path
    assert parse_folds('0-4') == [0, 1, 2, 3, 4]
    assert parse_folds('0,2,3') == [0, 2, 3]
    assert parse_folds('3') == [3]
    assert parse_folds('0-2, 4,1') == [0, 1, 2, 4]
    for bad in ('', 'a', '1-', '-1', '0..4', '1;2'):
        with pytest.raises(UserError, match='not a fold list'):
            parse_folds(bad)
    with pytest.raises(UserError, match='runs backwards; pass 1-4'):
        parse_folds('4-1')
    assert fold_dir('experiments/gpu', 3) == Path('experiments/gpu_fold3')
    assert fold_dir('experiments/gpu/', 3) == Path('experiments/gpu_fold3')
    assert fold_dir('experiments/gpu/fold{fold}', 3) == Path('experiments/gpu/fold3')
    monkeypatch.chdir(tmp_path)
    e = tmp_path / 'experiments'
    assert default_oof_path([e / 'gpu_fold0', e / 'gpu_fold1']) == Path('experiments/gpu.oof.best.json')
    assert default_oof_path([e / 'gpu' / 'fold0', e / 'gpu' / 'fold1']) == Path('experiments/gpu/oof.best.json')
    assert default_oof_path([e / 'unet_fold0_bce', e / 'unet_fold1_bce']) == Path('experiments/unet_bce.oof.best.json')
    assert default_oof_path([e / 'gpu_fold10', e / 'gpu_fold11']) == Path('experiments/gpu.oof.best.json')
    assert default_oof_path([e / 'gpu_fold3']) == Path('experiments/gpu.oof.best.json')
    assert default_oof_path(['/elsewhere/a', '/elsewhere/b']) == Path('/elsewhere/oof.best.json')


def test_fold_states(tmp_path):
    """new, restart (a run without a first checkpoint), resume, finished (summary newer than the checkpoint)."""
    from utils.folds import fold_state
    d = tmp_path / 'exp'
    assert fold_state(d, 0) == 'new'
    d.mkdir()
    (d / 'train_folds.log').write_text('only our log\n')
    assert fold_state(d, 0) == 'new'
    (d / 'train_config.json').write_text(json.dumps({'fold': 0}))
    assert fold_state(d, 0) == 'restart'
    with pytest.raises(UserError, match='holds a run of fold 0, not fold 2'):
        fold_state(d, 2)
    (d / 'checkpoint.pth').write_bytes(b'x')
    assert fold_state(d, 0) == 'resume'
    (d / 'summary.json').write_text('{}')
    os.utime(d / 'checkpoint.pth', ns=(1, 10**18))
    os.utime(d / 'summary.json', ns=(1, 10**18 + 1))
    assert fold_state(d, 0) == 'finished'
    os.utime(d / 'checkpoint.pth', ns=(1, 10**18 + 2))  # resumed (or overwritten) since that summary
    assert fold_state(d, 0) == 'resume'
    (d / 'checkpoint.pth').unlink()
    (d / 'snapshots').mkdir()
    (d / 'snapshots' / 'epoch_3.loss_0.5000.iout_0.500').write_bytes(b'x')
    with pytest.raises(UserError, match='snapshots but no checkpoint.pth'):
        fold_state(d, 0)


def test_gpu_choice_and_one_fold_per_gpu(monkeypatch, tmp_path, capfd):
    """CUDA_VISIBLE_DEVICES ids are handed out one per side-by-side fold (checked without a GPU)."""
    import torch

    from net import fold_scheduler
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 4)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '3,5,6,7')
    assert fold_scheduler.choose_gpus('auto', None) == ['3', '5', '6', '7']
    assert fold_scheduler.choose_gpus('1-2', None) == ['5', '6']
    assert fold_scheduler.choose_gpus('none', None) == [] and fold_scheduler.choose_gpus('auto', 'cpu') == []
    with pytest.raises(UserError, match='no GPU 4'):
        fold_scheduler.choose_gpus('4', None)
    with pytest.raises(UserError, match='pass --gpus 1 instead'):
        fold_scheduler.choose_gpus('auto', 'cuda:1')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,-1,3')  # CUDA ignores everything from an invalid entry on
    assert fold_scheduler.choose_gpus('auto', None) == []  # a single GPU: the child uses it as it finds it
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert fold_scheduler.choose_gpus('auto', None) == []

    show = [sys.executable, '-c', "import os, time; time.sleep(0.5); print('gpu', os.environ['CUDA_VISIBLE_DEVICES'])"]
    jobs = [fold_scheduler.Job(k, show, tmp_path / f'f{k}.log', f'fold {k}') for k in range(3)]
    fold_scheduler.run_jobs(jobs, ['5', '6'], 2, prefix_lines=True)
    out = capfd.readouterr().out
    assert [j.code for j in jobs] == [0, 0, 0]
    assert '[fold 0] gpu 5' in out and '[fold 1] gpu 6' in out  # the third fold waits for a free GPU
    assert f"[fold 2] gpu {out.split('[fold 2] gpu ')[1][0]}" in out
    assert all('gpu ' in (tmp_path / f'f{k}.log').read_text() for k in range(3))


def default_sigint():
    # A shell without job control starts background commands with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give train_folds.py the terminal's default, as a user's Ctrl-C meets it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_train_folds_alone_stops_the_running_fold_cleanly(data, tmp_path, sig):
    """Ctrl-C sent to train_folds.py alone (or a SIGTERM) is passed on to the running train.py, which
    stops with its finished epochs intact; the fold resumes from them."""
    import torch
    exp = tmp_path / 'sig'
    with open(tmp_path / 'out', 'w') as out:
        proc = subprocess.Popen([sys.executable, 'train_folds.py', '--folds', '0', '--experiment_dir', str(exp), *FAST,
                                 '--n_epochs', '50', '--data_dir', str(data)], cwd=ROOT, stdout=out,
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        deadline = time.monotonic() + 240
        while not logged_epochs(tmp_path / 'sig_fold0'):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / 'out').read_text()[-2000:]
            time.sleep(0.02)
        (child,) = children(proc.pid)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert not Path(f'/proc/{child}').exists() or 'zombie' in Path(f'/proc/{child}/status').read_text().lower()
    assert 'interrupted' in err if sig == signal.SIGINT else 'terminated' in err
    ckpt = torch.load(tmp_path / 'sig_fold0' / 'checkpoint.pth', weights_only=True)
    assert 1 <= ckpt['epoch'] < 50
    if sig == signal.SIGINT:  # a SIGTERM may leave a temporary file, which the resumed run clears
        assert not list((tmp_path / 'sig_fold0').rglob('.*.tmp*'))
    from utils.folds import fold_state
    assert fold_state(tmp_path / 'sig_fold0', 0) == 'resume'
