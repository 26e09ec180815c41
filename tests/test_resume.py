"""Never lose work: a run killed with SIGKILL continues with --resume exactly where it left off."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, stacked_cut
from test_errors import LITE
from utils.snapshots import snapshots_of

# Two cycles of a cosine schedule with a large rate: resuming must give a mid-cycle epoch its rate
# and restart it at the cycle boundary, or the learning rates (and then the weights) drift apart.
ARGS = [*LITE, '--n_epochs', '4', '--cycles', '2', '--scheduler', 'cosine', '--optimizer', 'adam_1e-3', '--seed', '7']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('resume') / 'data', 32, 8)


def train(data, exp, *extra):
    return subprocess.Popen([sys.executable, 'train.py', *ARGS, '--data_dir', str(data), '--experiment_dir', str(exp),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def logged_epochs(exp):
    try:
        return list(pd.read_csv(exp / 'logs' / 'log.csv')['epoch'])
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


def snapshot_files(exp):
    return [s.path for s in snapshots_of(exp)]


@pytest.mark.real_data
@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    from net.models import build_model
    from utils.io import load_snapshot
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    reference = train(data, whole)  # runs alongside: the two do not share anything
    victim = train(data, killed)
    deadline = time.monotonic() + 240
    while not logged_epochs(killed):
        assert victim.poll() is None, f"the run ended before it could be killed:\n{victim.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no epoch was logged in time"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    done_before = logged_epochs(killed)
    assert 1 <= len(done_before) < 4, done_before
    assert (killed / '.lock').exists()  # the kill left its lock file behind, but the kernel dropped its flock
    # What the killed run had finished is intact and loadable.
    for snap in snapshot_files(killed):
        load_snapshot(snap)

    finish(train(data, killed, '--resume'))
    finish(reference)

    log, ref = pd.read_csv(killed / 'logs' / 'log.csv'), pd.read_csv(whole / 'logs' / 'log.csv')
    assert list(log['epoch']) == [1, 2, 3, 4]
    assert list(log['cycle']) == [0, 0, 1, 1]
    ckpt = torch.load(killed / 'checkpoint.pth', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 4 and ckpt['cycle'] == 1
    # The same seed on the same CPU: the resumed run is the uninterrupted one, number for number.
    for col in ('train_loss', 'val_loss', 'val_iou', 'val_score', 'lr'):
        assert list(log[col]) == list(ref[col]), col
    assert [p.relative_to(killed) for p in snapshot_files(killed)] == [p.relative_to(whole) for p in snapshot_files(whole)]
    for mine, theirs in zip(snapshot_files(killed), snapshot_files(whole)):
        a, b = load_snapshot(mine), load_snapshot(theirs)
        assert a['epoch'] == b['epoch'] and a['arch'] == 'unet_lite'
        assert all(torch.equal(a['model'][k], b['model'][k]) for k in b['model']), mine.name
        build_model('unet_lite').load_state_dict(a['model'])
    # Nothing half-written is left behind by the kill, and the resumed run gave the directory back.
    assert not list(killed.rglob('.*.tmp*'))
    assert not (killed / '.lock').exists()



def test_prepare_clears_what_overwrite_and_killed_runs_leave(tmp_path):
    from utils.io import temp_name
    from utils.run_folder import Experiment
    dead = subprocess.Popen(['true'])
    dead.wait()
    exp = Experiment(tmp_path / 'exp')
    (exp.root / 'snapshots').mkdir(parents=True)
    (exp.root / 'snapshots' / 'epoch_1.loss_0.5000.iout_0.500').write_text('old')
    exp.config_path.write_text('{}')
    temp_name(exp.checkpoint_path, pid=dead.pid).write_text('half')  # its writer was killed
    busy = temp_name(exp.root / 'notes', pid=os.getpid())
    busy.write_text('busy')  # its writer is alive
    (exp.root / 'notes.txt').write_text('mine')
    exp.check(resume=False, overwrite=True)  # checking alone deletes nothing
    assert exp.config_path.exists()
    exp.prepare(resume=False, overwrite=True)
    assert sorted(p.name for p in exp.root.iterdir()) == sorted(['.lock', busy.name, 'notes.txt'])
    exp.release()
    assert sorted(p.name for p in exp.root.iterdir()) == sorted([busy.name, 'notes.txt'])
