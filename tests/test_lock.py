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

def left_behind(root, text=None):
    """EXP/.lock as a run killed with SIGKILL leaves it: the file is there, the kernel has dropped its flock.
    With `text`, a file of that content instead (a hand-made or half-written one)."""
    root.mkdir(parents=True, exist_ok=True)
    if text is not None:
        (root / '.lock').write_text(text)
        return
    killed = subprocess.run([sys.executable, '-c', "import os, signal, sys\nfrom utils.run_lock import RunLock\n"
                             "lock = RunLock(sys.argv[1])\nlock.acquire()\nos.kill(os.getpid(), signal.SIGKILL)", str(root)],
                            cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((root / '.lock').read_text())['pid'] != os.getpid()


@pytest.mark.parametrize('text', [None, '', 'not json', json.dumps({'host': 'elsewhere.example', 'pid': 1})],
                         ids=['killed', 'empty', 'garbage', 'another-host'])
def test_lock_of_a_killed_run_is_taken_over(tmp_path, text):
    """Whatever a lock file says, nobody holding its flock means that it is free: taken at once, no judging."""
    from utils.run_folder import Experiment
    left_behind(tmp_path / 'exp', text)
    exp = Experiment(tmp_path / 'exp')
    exp.check(resume=False, overwrite=True)
    exp.prepare(resume=False, overwrite=True)
    held = json.loads((tmp_path / 'exp' / '.lock').read_text())
    assert held['pid'] == os.getpid() and held['host'] == socket.gethostname()
    exp.release()
    assert not (tmp_path / 'exp' / '.lock').exists()


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """A DataLoader worker (a fork of the run) that outlives a SIGKILL of its run does not hold the folder."""
    script = ("import os, signal, sys, time\nfrom utils.run_lock import RunLock\nlock = RunLock(sys.argv[1])\nlock.acquire()\n"
              "if os.fork() == 0:\n    time.sleep(30)\n    os._exit(0)\nos.kill(os.getpid(), signal.SIGKILL)")
    run = subprocess.Popen([sys.executable, '-c', script, str(tmp_path)], cwd=ROOT, start_new_session=True)
    try:
        assert run.wait(timeout=60) == -signal.SIGKILL
        from utils.run_lock import RunLock
        with RunLock(tmp_path) as lock:
            assert json.loads(lock.path.read_text())['pid'] == os.getpid()
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the sleeping child


def test_live_lock_is_refused_and_kept(tmp_path):
    from utils.errors import UserError
    from utils.run_folder import Experiment
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


def test_a_release_racing_a_take_gives_one_holder(tmp_path):
    """A taker that opened .lock just before its holder deleted it, and flocks it just after, holds a file
    that is no longer there: it sees so and takes the file that is there now (or is told who holds it)."""
    from utils import run_lock
    from utils.errors import UserError
    first = run_lock.RunLock(tmp_path)
    first.acquire()
    opened_before = open(first.path, 'ab', buffering=0)
    first.release()
    opens = []

    def late_open(path, *a, **k):
        opens.append(path)
        return opened_before if len(opens) == 1 else open(path, *a, **k)

    third = run_lock.RunLock(tmp_path)
    third.acquire()  # took the new file meanwhile
    racer = run_lock.RunLock(tmp_path)
    run_lock.open = late_open
    try:
        with pytest.raises(UserError, match='in use by another run'):
            racer.acquire()
        assert len(opens) == 2  # the deleted file, then the real one
        third.release()
        opens.clear()
        opened_before = open(tmp_path / 'stand-in', 'ab', buffering=0)  # a file no longer at .lock
        racer.acquire()
        assert len(opens) == 2 and json.loads(racer.path.read_text())['pid'] == os.getpid()
        racer.release()
    finally:
        del run_lock.open
    assert not racer.path.exists()


@pytest.mark.parametrize('how', ['folder', 'unreadable'])
def test_a_lock_that_cannot_be_used_is_named_so(tmp_path, monkeypatch, how):
    from utils import run_lock
    from utils.errors import UserError
    from utils.run_folder import Experiment
    exp = Experiment(tmp_path / 'exp')
    if how == 'folder':
        (exp.root / '.lock').mkdir(parents=True)
    else:  # the test may run as root, whom file modes do not stop
        exp.root.mkdir()
        (exp.root / '.lock').write_text('')

        def denied(path, *a, **k):
            raise PermissionError(13, 'Permission denied', str(path))
        monkeypatch.setattr(run_lock, 'open', denied, raising=False)
    reason = 'Is a directory' if how == 'folder' else 'Permission denied'
    with pytest.raises(UserError) as e:
        exp.check(resume=False, overwrite=False)
    msg = str(e.value)
    assert f'{exp.root / ".lock"} cannot be used as the lock of {exp.root} ({reason}); if no run uses' in msg, msg
    with pytest.raises(UserError) as e:
        exp.prepare(resume=False, overwrite=False)
    msg = str(e.value)  # taking it opens it for writing: a file that cannot be written is the folder's to fix
    assert msg.startswith(f'{exp.root / ".lock"} cannot be used' if how == 'folder' else
                          f'cannot write {exp.root / ".lock"}: permission denied; make {exp.root} writable'), msg



def test_no_locks_on_the_file_system_is_named_so(tmp_path, monkeypatch):
    """Some network mounts give no locks: one line, not a traceback."""
    import errno

    from utils import run_lock
    from utils.errors import UserError
    from utils.run_folder import Experiment

    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(run_lock.fcntl, 'flock', no_locks)
    exp = Experiment(tmp_path / 'exp')
    with pytest.raises(UserError, match=r'cannot be used as the lock of .*\(No locks available\); if no run uses'):
        exp.prepare(resume=False, overwrite=False)


def test_a_full_disk_while_writing_the_holder_gives_the_lock_back(tmp_path, monkeypatch):
    import errno

    from test_disk_full import FillsUp  # a file whose writes fail once its budget (here none) is spent
    from utils import run_lock
    from utils.errors import UserError
    from utils.run_folder import Experiment

    monkeypatch.setattr(run_lock, 'open', lambda *a, **k: FillsUp(open(*a, **k), 0, errno.ENOSPC), raising=False)
    exp = Experiment(tmp_path / 'exp')
    with pytest.raises(UserError, match=f'cannot write {exp.lock.path}: no space left'):
        exp.prepare(resume=False, overwrite=False)
    assert not exp.lock.path.exists() and exp.lock._file is None


def test_release_leaves_a_lock_file_that_is_not_its_own(tmp_path):
    """A holder whose .lock was deleted by hand (and taken by a new run since) deletes nothing as it ends."""
    from utils.run_lock import RunLock
    first = RunLock(tmp_path)
    first.acquire()
    first.path.unlink()
    second = RunLock(tmp_path)
    second.acquire()
    first.release()
    assert json.loads(second.path.read_text())['pid'] == os.getpid()
    second.release()
    assert not second.path.exists()

def _take(root, barrier, results, done):
    from utils.errors import UserError
    from utils.run_lock import RunLock
    lock = RunLock(root)  # held as long as this object lives
    barrier.wait()
    try:
        lock.acquire()
        results.put('won')
    except UserError as e:
        results.put(str(e))
    done.wait(60)  # alive, and so holding the lock, until every taker has had its turn


@pytest.mark.parametrize('left', [False, True])
def test_racing_takers_exactly_one_wins(tmp_path, left):
    """Six processes take a free lock (or one a killed run left) at the same moment: one wins, five are
    told that the folder is in use."""
    ctx = multiprocessing.get_context('fork')
    for round_ in range(3):
        root = tmp_path / f'r{round_}'
        root.mkdir()
        if left:
            left_behind(root)
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
    from utils.run_folder import Experiment
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
