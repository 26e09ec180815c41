"""One run per experiment directory: a second train.py beside a live one is refused with one line and
changes nothing; of two started together exactly one trains; a killed run's lock is taken over."""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT, stacked_cut
from test_errors import LITE, assert_one_line_error, run_scripts, visible_lines


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('lock') / 'data', 32, 8)


def train(data, exp, *extra):
    return subprocess.Popen([sys.executable, 'train.py', *LITE, '--data_dir', str(data), '--experiment_dir', str(exp),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_epochs(exp):
    try:
        return list(pd.read_csv(exp / 'logs' / 'log.csv')['epoch'])
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return []


@pytest.mark.real_data
def test_second_run_beside_a_live_one_is_refused_and_changes_nothing(data, tmp_path):
    exp = tmp_path / 'exp'
    live = train(data, exp, '--n_epochs', '3')
    try:
        deadline = time.monotonic() + 240
        while not (exp / 'checkpoint.pth').exists():
            assert live.poll() is None, f"the run ended before its first checkpoint:\n{live.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        # Stopped, not ended: the run still holds the directory, and its files stand still while the
        # others try, so that "changes nothing" can be checked byte for byte.
        os.kill(live.pid, signal.SIGSTOP)
        snapshots = sorted(p.name for p in (exp / 'snapshots').rglob('*'))
        assert snapshots, "the first epoch wrote no snapshot"
        argv = ['train.py', *LITE, '--data_dir', data, '--experiment_dir', exp]
        results = run_scripts([{'argv': [*argv, '--resume'], 'watch': [exp]},
                               {'argv': [*argv, '--overwrite'], 'watch': [exp]},
                               {'argv': argv, 'watch': [exp]}])
        for r in results:
            assert_one_line_error(r, ['in use by another run', f'pid {live.pid}', socket.gethostname(),
                                      'another --experiment_dir'], 'train.py')
            assert r['after'] == r['before'], "a refused run changed files"
        assert sorted(p.name for p in (exp / 'snapshots').rglob('*')) == snapshots
        os.kill(live.pid, signal.SIGCONT)
        out, err = live.communicate(timeout=300)
        assert live.returncode == 0, err[-3000:]
    finally:
        if live.poll() is None:
            os.kill(live.pid, signal.SIGCONT)
            live.kill()
            live.communicate()
    assert logged_epochs(exp) == [1, 2, 3]
    assert not (exp / '.lock').exists(), "the lock outlived its run"
    assert not list(exp.rglob('.*.tmp*'))


@pytest.mark.real_data
def test_two_runs_started_together_exactly_one_trains(data, tmp_path):
    """Two --overwrite runs of one directory at the same moment: both pass the early check (a run is
    there to overwrite), and only the lock stands between them."""
    from test_errors import fake_experiment
    exp = tmp_path / 'exp'
    fake_experiment(exp, data)
    runs = [train(data, exp, '--n_epochs', '6', '--overwrite') for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in runs]
    done = [(p.returncode, out, err) for p, (out, err) in zip(runs, outs)]
    codes = sorted(c for c, _, _ in done)
    assert codes == [0, 2], [(c, err[-1500:]) for c, _, err in done]
    loser = next(err for c, _, err in done if c == 2)
    lines = visible_lines(loser)
    assert len(lines) == 1 and lines[0].startswith('train.py: error: '), loser
    assert 'in use by another run' in lines[0], lines[0]
    assert logged_epochs(exp) == [1, 2, 3, 4, 5, 6]
    assert not (exp / '.lock').exists()


# ---------------------------------------------------------------- the lock itself, in-process

def stale_record(root, **changes):
    """A lock record of this host whose process has ended (a run killed with SIGKILL)."""
    dead = subprocess.Popen(['true'])
    dead.wait()
    record = {'host': socket.gethostname(), 'pid': dead.pid, 'started': '2026-01-01 00:00:00', 'token': 'old', **changes}
    root.mkdir(parents=True, exist_ok=True)
    (root / '.lock').write_text(json.dumps(record))
    return record


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    from utils.experiment import Experiment
    stale_record(tmp_path / 'exp')
    exp = Experiment(tmp_path / 'exp')
    exp.check(resume=False, overwrite=True)  # a stale lock does not count
    exp.prepare(resume=False, overwrite=True)
    held = json.loads((tmp_path / 'exp' / '.lock').read_text())
    assert held['pid'] == os.getpid() and held['token'] != 'old'
    exp.release()
    assert not (tmp_path / 'exp' / '.lock').exists()


def test_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    """A pid that was reused (containers hand out small pids again soon) is told apart by its start time."""
    from utils.experiment import RunLock, _proc_stat
    if _proc_stat(os.getpid()) is None:
        pytest.skip("no /proc on this system")
    stale_record(tmp_path, pid=os.getppid(), proc_start=_proc_stat(os.getppid())[1] + 1)
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())['pid'] == os.getpid()


def test_live_lock_is_refused_and_kept(tmp_path):
    from utils.errors import UserError
    from utils.experiment import Experiment
    holder = Experiment(tmp_path / 'exp')
    holder.prepare(resume=False, overwrite=False)
    (tmp_path / 'exp' / 'train_config.json').write_text('{}')
    before = (tmp_path / 'exp' / '.lock').read_text()
    other = Experiment(tmp_path / 'exp')
    for call in (lambda: other.check(resume=False, overwrite=True), lambda: other.prepare(resume=False, overwrite=True)):
        with pytest.raises(UserError, match=f'in use by another run \\(pid {os.getpid()} on {socket.gethostname()}'):
            call()
    other.release()  # holds nothing: must not delete the holder's lock
    assert (tmp_path / 'exp' / '.lock').read_text() == before
    assert (tmp_path / 'exp' / 'train_config.json').exists()
    holder.release()
    assert not (tmp_path / 'exp' / '.lock').exists()


def test_lock_of_another_host_is_never_broken(tmp_path):
    from utils.errors import UserError
    from utils.experiment import Experiment
    stale_record(tmp_path / 'exp', host='elsewhere.example', pid=1)
    before = (tmp_path / 'exp' / '.lock').read_text()
    with pytest.raises(UserError) as e:
        Experiment(tmp_path / 'exp').prepare(resume=False, overwrite=True)
    msg = str(e.value)
    assert 'another machine' in msg and 'pid 1 on elsewhere.example' in msg and str(tmp_path / 'exp' / '.lock') in msg
    assert (tmp_path / 'exp' / '.lock').read_text() == before


def test_lock_that_is_not_a_record_is_refused(tmp_path):
    from utils.errors import UserError
    from utils.experiment import Experiment
    (tmp_path / 'exp').mkdir()
    (tmp_path / 'exp' / '.lock').write_text('')
    with pytest.raises(UserError, match='not a lock record; if no run uses'):
        Experiment(tmp_path / 'exp').check(resume=False, overwrite=True)


def _take(root, barrier, results, done):
    from utils.errors import UserError
    from utils.experiment import RunLock
    barrier.wait()
    try:
        RunLock(root).acquire()
        results.put('won')
    except UserError as e:
        results.put(str(e))
    done.wait(60)  # alive, and so holding the lock, until every taker has had its turn


@pytest.mark.parametrize('stale', [False, True])
def test_racing_takers_exactly_one_wins(tmp_path, stale):
    """Six processes take a free (or a stale) lock at the same moment: one wins, five are told who holds it."""
    ctx = multiprocessing.get_context('fork')
    for round_ in range(3):
        root = tmp_path / f'r{round_}'
        root.mkdir()
        if stale:
            stale_record(root)
        barrier, results, done = ctx.Barrier(6), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_take, args=(root, barrier, results, done)) for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        done.set()
        for p in procs:
            p.join(timeout=60)
        assert outcomes.count('won') == 1, outcomes
        assert all('in use by another run' in o for o in outcomes if o != 'won'), outcomes


def test_stale_temporaries_of_this_host_only(tmp_path):
    """The clean-up judges a temporary file by its host and pid: another machine's may be being written."""
    from utils.experiment import Experiment
    from utils.io import temp_name
    dead = subprocess.Popen(['true'])
    dead.wait()
    exp = Experiment(tmp_path / 'exp')
    exp.root.mkdir()
    killed = temp_name(exp.checkpoint_path, pid=dead.pid)
    killed.write_text('half')
    live = temp_name(exp.root / 'notes', pid=os.getpid())
    live.write_text('busy')
    remote = exp.root / f'.checkpoint.pth.tmp{dead.pid}@elsewhere.example'
    remote.write_text('another machine is writing it')
    legacy = exp.root / f'.log.csv.tmp{dead.pid}'
    legacy.write_text('no host: cannot be told')
    exp.prepare(resume=False, overwrite=False)
    exp.release()
    assert sorted(p.name for p in exp.root.iterdir()) == sorted([live.name, remote.name, legacy.name])
