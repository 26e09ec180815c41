"""A full disk, a quota or a read-only folder: one line that names the file and what to do, no
temporary file left, and the earlier checkpoint, snapshots, log and submission intact, so that
--resume goes on from them.

The failures are made in-process: `open` in utils.io hands out files whose writes fail after N
bytes (a disk that fills in the middle of a file), or os.replace fails (at the rename).
"""
import builtins
import errno
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import stacked_cut
from test_errors import LITE, visible_lines
from utils.snapshots import snapshots_of


class FillsUp:
    """A file whose writes fail with `err` once `budget` bytes have gone in (the bytes that fit are written)."""

    def __init__(self, f, budget, err):
        self.f, self.budget, self.err, self.written = f, budget, err, 0

    def write(self, b):
        room = self.budget - self.written
        if len(b) > room:
            if room > 0:
                self.f.write(b[:room])
                self.written += room
            raise OSError(self.err, os.strerror(self.err))
        self.written += len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class Faults:
    """Make the n-th write of files whose name contains `name` fail: in the middle, at open, or at the rename."""

    def __init__(self, monkeypatch, name, where, err=errno.ENOSPC, nth=1, budget=1000):
        from utils import io, run_lock
        self.name, self.where, self.err, self.nth, self.budget, self.seen = name, where, err, nth, budget, 0
        real_replace = os.replace
        for module in (io, run_lock):  # the writers, and the lock of an experiment directory
            monkeypatch.setattr(module, 'open', self.open, raising=False)

        def replace(src, dst, *a, **k):
            if self.where == 'rename' and self.hit(dst):
                raise OSError(self.err, os.strerror(self.err), str(src))
            return real_replace(src, dst, *a, **k)
        monkeypatch.setattr(os, 'replace', replace)

    def hit(self, path):
        if self.name not in Path(path).name:
            return False
        self.seen += 1
        return self.seen == self.nth

    def open(self, path, mode='r', *a, **k):
        if self.where in ('write', 'open') and ('w' in mode or 'a' in mode) and self.hit(path):
            if self.where == 'open':
                raise OSError(self.err, os.strerror(self.err), str(path))
            return FillsUp(builtins.open(path, mode, *a, **k), self.budget, self.err)
        return builtins.open(path, mode, *a, **k)


def temporaries(root):
    return sorted(str(p) for p in Path(root).rglob('.*.tmp*'))


def one_line(capfd, prog, *phrases):
    err = capfd.readouterr().err
    lines = visible_lines(err)
    assert 'Traceback' not in err and len(lines) == 1, err
    assert lines[0].startswith(f'{prog}: error: '), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


def run(monkeypatch, prog, main, argv):
    """main(argv) as the script runs it (run_cli): the exit status."""
    from utils.errors import run_cli
    monkeypatch.setattr(sys, 'argv', [prog, *map(str, argv)])
    try:
        run_cli(main, [str(a) for a in argv])
    except SystemExit as e:
        return e.code
    return 0


# ---------------------------------------------------------------- every writer

def _writers():
    from utils import io
    return {
        'npy': lambda p, v: io.save_npy(p, np.full(5000, v, np.float32)),
        'torch': lambda p, v: io.save_torch(p, {'w': torch.full((5000,), float(v))}),
        'rows': lambda p, v: io.save_rows(p, ['id', 'rle_mask'], [[f'id{k}', f'{v} {k}'] for k in range(500)]),
        'json': lambda p, v: io.save_json(p, {'v': v, 'pad': 'x' * 5000}),
        'csv': lambda p, v: io.save_csv(p, pd.DataFrame({'a': [v] * 2000})),
        'png': lambda p, v: io.save_png(p, np.random.default_rng(v).integers(0, 255, (200, 200), dtype=np.uint8)),
    }


@pytest.mark.parametrize('fault', [('write', errno.ENOSPC, 'no space left'), ('write', errno.EDQUOT, 'quota'),
                                   ('rename', errno.ENOSPC, 'no space left'), ('open', errno.EROFS, 'read-only'),
                                   ('open', errno.EACCES, 'permission denied')],
                         ids=lambda f: f'{f[0]}-{errno.errorcode[f[1]]}')
@pytest.mark.parametrize('kind', ['npy', 'torch', 'rows', 'json', 'csv', 'png'])
def test_every_writer_keeps_the_old_file(tmp_path, monkeypatch, kind, fault):
    from utils.io import WriteError
    where, err, reason = fault
    path = tmp_path / f'out.{kind}'
    write = _writers()[kind]
    write(path, 1)
    before = path.read_bytes()
    Faults(monkeypatch, path.name, where, err, budget=100)
    with pytest.raises(WriteError) as e:
        write(path, 2)
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f'cannot write {path}: ') and reason in msg and 'another folder' in msg, msg
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


# ---------------------------------------------------------------- a training run

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return stacked_cut(tmp_path_factory.mktemp('disk_full') / 'data', 32, 8)


# Two one-epoch cycles: each cycle keeps its own best snapshot, so epoch 2 always writes one.
CYCLES = [*LITE, '--n_epochs', '2', '--cycles', '2']


@pytest.mark.real_data
@pytest.mark.parametrize('name,where,nth,shown', [
    ('checkpoint.pth', 'rename', 2, 'checkpoint.pth'),  # epoch 2's checkpoint, at the rename
    ('epoch_2.', 'write', 2, 'cycle_1/epoch_2.'),  # epoch 2's snapshot (after its masks), half-way through
    ('log.csv', 'write', 2, 'log.csv'),  # the log after epoch 1's, half-way through
], ids=['checkpoint-rename', 'snapshot-middle', 'log-middle'])
def test_training_on_a_full_disk_stops_cleanly_and_resumes(data, tmp_path, monkeypatch, capfd, name, where, nth, shown):
    import train
    from utils.io import load_snapshot
    exp = tmp_path / 'exp'
    argv = [*CYCLES, '--data_dir', data, '--experiment_dir', exp]
    Faults(monkeypatch, name, where, nth=nth, budget=100)
    assert run(monkeypatch, 'train.py', train.main, argv) == 2
    monkeypatch.undo()
    line = one_line(capfd, 'train.py', 'cannot write', shown, 'no space left', '--resume', '--experiment_dir')
    assert str(exp) in line
    assert temporaries(exp) == []
    assert not (exp / '.lock').exists()
    ckpt = torch.load(exp / 'checkpoint.pth', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == (1 if name == 'checkpoint.pth' or 'epoch_2' in name else 2)
    snaps = [s.path for s in snapshots_of(exp)]
    for s in snaps:
        load_snapshot(s)
    if 'epoch_2' in name:  # the failed snapshot left nothing behind, not even its validation masks
        assert not list((exp / 'snapshots').rglob('*epoch_2.*'))
    # What was written is enough to go on: --resume finishes the run.
    assert run(monkeypatch, 'train.py', train.main, [*argv, '--resume']) == 0, capfd.readouterr().err[-2000:]
    assert list(pd.read_csv(exp / 'logs' / 'log.csv')['epoch']) == [1, 2]
    assert [s.path.parent.name for s in snapshots_of(exp)] \
        == ['cycle_0', 'cycle_1']
    assert temporaries(exp) == [] and not (exp / '.lock').exists()


@pytest.mark.real_data
def test_training_in_a_read_only_folder(data, tmp_path, monkeypatch, capfd):
    """The lock is the run's first write: a read-only folder stops it there, before anything else."""
    import train
    Faults(monkeypatch, '.lock', 'open', errno.EROFS)
    exp = tmp_path / 'exp'
    assert run(monkeypatch, 'train.py', train.main, [*CYCLES, '--data_dir', data, '--experiment_dir', exp]) == 2
    monkeypatch.undo()
    one_line(capfd, 'train.py', f'cannot write {exp / ".lock"}', 'read-only', f'make {exp} writable',
             '--experiment_dir')
    assert [p.name for p in exp.iterdir()] == []


# ---------------------------------------------------------------- a submission

@pytest.fixture
def fold_avg_case(tmp_path):
    ids = [f'{k:010x}' for k in range(40)]
    (tmp_path / 'sample_submission.csv').write_text('id,rle_mask\n' + ''.join(f'{i},1 1\n' for i in ids))
    probs = np.random.default_rng(0).random((len(ids), 101, 101)).astype(np.float16)
    np.save(tmp_path / 'probs.npy', probs)
    out = tmp_path / 'sub' / 'submission.csv'
    out.parent.mkdir()
    out.write_text('id,rle_mask\nold,1 1\n')
    return tmp_path, out


@pytest.mark.parametrize('where,err,phrases', [
    ('write', errno.ENOSPC, ['no space left', 'free space', '--out']),
    ('rename', errno.ENOSPC, ['no space left', 'free space', '--out']),
    ('open', errno.EROFS, ['read-only', '--out']),
], ids=['middle', 'rename', 'read-only'])
def test_submission_on_a_full_disk_keeps_the_old_one(fold_avg_case, monkeypatch, capfd, where, err, phrases):
    import predict_fold_avg
    d, out = fold_avg_case
    Faults(monkeypatch, 'submission.csv', where, err, budget=2000)
    code = run(monkeypatch, 'predict_fold_avg.py', predict_fold_avg.main,
               [d / 'probs.npy', '--data_dir', d, '--out', out])
    monkeypatch.undo()
    assert code == 2
    one_line(capfd, 'predict_fold_avg.py', f'cannot write {out}', *phrases)
    assert out.read_text() == 'id,rle_mask\nold,1 1\n'
    assert temporaries(d) == []
