"""Shared fixtures: the real data (required in CI), small data cuts, and the
`slow` / `real_data` markers (`make test-fast` leaves both out)."""
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# make test runs one pytest-xdist worker per core: each worker, and every script it starts, then uses one
# thread, so that the workers share the cores instead of oversubscribing them.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'
    os.environ['MKL_NUM_THREADS'] = '1'
REAL = Path(os.environ.get('SALT_REAL_DATA', ROOT.parent / 'shared' / 'tgs'))


def real_data_or_fail():
    item = _running[0] if _running else None
    if item is not None and not item.get_closest_marker('real_data'):
        pytest.fail(f"{item.nodeid} reads the real data: mark it @pytest.mark.real_data (make test-fast must leave it out)")
    if (REAL / 'train.csv').is_file():
        return REAL
    msg = f"real TGS data not found at {REAL} (set SALT_REAL_DATA)"
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail(msg + "; CI must have it")
    pytest.skip(msg)


@pytest.fixture(scope='session')
def real_dir():
    """The read-only real data folder."""
    return real_data_or_fail()


def cut_real(dst, n_train, n_test, start=0):
    """Copy a slice of the real data (CSV rows and their PNGs) into dst, in the competition's layout."""
    src = real_data_or_fail()
    train = pd.read_csv(src / 'train.csv', dtype=str, keep_default_na=False).iloc[start:start + n_train]
    sub = pd.read_csv(src / 'sample_submission.csv', dtype=str, keep_default_na=False).iloc[:n_test]
    for d in ('train/images', 'train/masks', 'test/images'):
        (dst / d).mkdir(parents=True, exist_ok=True)
    for i in train['id']:
        shutil.copy(src / 'train' / 'images' / f'{i}.png', dst / 'train' / 'images')
        shutil.copy(src / 'train' / 'masks' / f'{i}.png', dst / 'train' / 'masks')
    for i in sub['id']:
        shutil.copy(src / 'test' / 'images' / f'{i}.png', dst / 'test' / 'images')
    train.to_csv(dst / 'train.csv', index=False)
    sub.to_csv(dst / 'sample_submission.csv', index=False)
    shutil.copy(src / 'depths.csv', dst / 'depths.csv')
    return dst


@pytest.fixture
def real_cut(tmp_path):
    """A small writable cut of the real data: 96 train and 24 test images."""
    return cut_real(tmp_path / 'data', 96, 24)


def stacked_cut(dst, n_train, n_test, n_folds=4):
    """A cut of the real data, stacked into arrays and split into folds, by the pipeline's own tools."""
    from utils.make_folds import main as make_folds
    from utils.stack_and_save import main as stack
    d = cut_real(dst, n_train, n_test)
    stack(['--data_dir', str(d), '--workers', '1'])
    make_folds(['--p', str(d / 'train.csv'), '--n', str(n_folds)])
    return d


def run_main(args, check=True):
    """Run a script's main(argv) in this process as `python3 SCRIPT ARGS...` runs it from the root: its
    stdout, stderr and exit status (a UserError is one line and status 2, as utils.errors.run_cli makes it).

    One torch import serves every call; tests where the process itself matters (signals, torchrun, the
    original's commands as typed) use a subprocess instead.
    """
    import contextlib
    import importlib
    import io
    import subprocess
    import sys

    from utils.errors import run_cli
    script, argv = str(args[0]), [str(a) for a in args[1:]]
    module = importlib.import_module(script.removesuffix('.py').replace('/', '.'))
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved = sys.argv
    sys.argv = [str(ROOT / script)] + argv
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_cli(module.main, argv)
            except SystemExit as e:  # as the interpreter treats it: None is 0, a message is printed with 1
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv = saved
    r = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check:
        assert code == 0, f"{script} failed ({code}):\n{r.stderr[-3000:]}"
    return r


# ---------------------------------------------------------------- markers
# `slow` and `real_data` are marked on the tests themselves (pytest.ini declares them; make
# test-fast leaves both out). A test that uses the real data without its mark would run in
# make test-fast: collection refuses one that asks for a real-data fixture, and the helpers
# refuse to cut the real data for one that calls them directly.
REAL_DATA_FIXTURES = {'real_dir', 'real_cut'}
_running = []  # the test being set up or run, for real_data_or_fail's check


def unmarked_real_data_users(items):
    """The tests among items that ask for a real-data fixture but are not marked real_data."""
    return [item.nodeid for item in items
            if REAL_DATA_FIXTURES & set(getattr(item, 'fixturenames', ())) and not item.get_closest_marker('real_data')]


def pytest_collection_modifyitems(config, items):
    unmarked = unmarked_real_data_users(items)
    if unmarked:
        raise pytest.UsageError("these tests use the real data but are not marked @pytest.mark.real_data: "
                                + ', '.join(unmarked))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running[:] = [item]


def pytest_runtest_teardown(item):
    _running.clear()
