"""A damaged checkpoint or snapshot (cut off at a byte hypothesis picks, or zeroed, as a crash or a
full disk leaves files): one line that names the file and the way out (--overwrite for a
checkpoint, another snapshot for a snapshot), exit status 2, and nothing on disk changed; for
train.py --resume and --init, predict.py, predict_tta.py and predict_se.py."""
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import stacked_cut
from bad_input_env import file_hashes, visible_lines
from test_errors import LITE
from utils.snapshots import snapshots_of

pytestmark = pytest.mark.real_data

# Each example loads a file and builds little else: a handful is enough to move the cut around.
FEW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A real two-cycle run (checkpoint, a snapshot per cycle), trained in-process."""
    import train
    tmp = tmp_path_factory.mktemp('damaged')
    data = stacked_cut(tmp / 'data', 32, 8)
    exp = tmp / 'exp'
    train.main([*LITE, '--n_epochs', '2', '--cycles', '2', '--data_dir', str(data), '--experiment_dir', str(exp)])
    snaps = [s.path for s in snapshots_of(exp)]
    assert [p.parent.name for p in snaps] == ['cycle_0', 'cycle_1']
    return {'tmp': tmp, 'data': data, 'exp': exp, 'snap': snaps[0], 'last_snap': snaps[-1]}


DAMAGE = st.one_of(st.just(('zeroed', 0)), st.tuples(st.just('cut'), st.floats(0, 1, exclude_max=True)))


def damaged(path, how):
    """Damage `path` in place; returns a function that puts the original bytes back."""
    original = path.read_bytes()
    kind, where = how
    path.write_bytes(bytes(len(original)) if kind == 'zeroed' else original[:int(where * len(original))])
    return lambda: path.write_bytes(original)


def refused(prog, main, argv, watch, *phrases):
    """Run main(argv) as its script runs it: exit 2, one line with `phrases`, files under `watch` unchanged."""
    from utils.errors import run_cli
    import io
    before = file_hashes(watch)
    old_argv, old_err = sys.argv, sys.stderr
    sys.argv, sys.stderr = [prog, *map(str, argv)], io.StringIO()
    try:
        with pytest.raises(SystemExit) as e:
            run_cli(main, [str(a) for a in argv])
        err = sys.stderr.getvalue()
    finally:
        sys.argv, sys.stderr = old_argv, old_err
    lines = visible_lines(err)
    assert e.value.code == 2 and len(lines) == 1 and 'Traceback' not in err, err
    assert lines[0].startswith(f'{prog}: error: '), lines[0]
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    assert file_hashes(watch) == before, "a refused run changed files"


@FEW
@given(DAMAGE)
@example(('cut', 0.0))
@example(('cut', 0.999999))
def test_resume_from_a_damaged_checkpoint(run, how):
    import train
    ckpt = run['exp'] / 'checkpoint.pth'
    restore = damaged(ckpt, how)
    try:
        refused('train.py', train.main, [*LITE, '--data_dir', run['data'], '--experiment_dir', run['exp'], '--resume'],
                [run['exp']], str(ckpt), '--overwrite')
    finally:
        restore()


@FEW
@given(DAMAGE)
def test_init_from_a_damaged_snapshot(run, how):
    import train
    new = run['tmp'] / 'fine_tune'
    restore = damaged(run['snap'], how)
    try:
        refused('train.py', train.main, [*LITE, '--data_dir', run['data'], '--experiment_dir', new, '--init', run['snap']],
                [run['exp']], str(run['snap']), 'another snapshot')
    finally:
        restore()
    assert not new.exists()


@FEW
@given(DAMAGE, st.sampled_from(['predict.py', 'predict_tta.py']))
def test_predict_with_a_damaged_snapshot(run, how, prog):
    import predict
    import predict_tta
    main = {'predict.py': predict.main, 'predict_tta.py': predict_tta.main}[prog]
    restore = damaged(run['snap'], how)
    try:
        refused(prog, main, ['--snapshot', run['snap'], '--data_dir', run['data'], '--threads', '1'],
                [run['exp']], str(run['snap']), 'another snapshot')
    finally:
        restore()
    assert not (run['exp'] / 'predictions').exists()


@FEW
@given(DAMAGE)
def test_snapshot_ensemble_with_a_damaged_snapshot(run, how):
    import predict_se
    restore = damaged(run['last_snap'], how)
    try:
        refused('predict_se.py', predict_se.main, ['--snapshot_dir', run['exp'], '--data_dir', run['data'],
                                                   '--threads', '1'],
                [run['exp']], str(run['last_snap']), 'another snapshot')
    finally:
        restore()
    assert not (run['exp'] / 'predictions').exists()


def test_the_run_is_whole_again_after_the_examples(run):
    """The damage was undone after each example: the files load (a check on the test, not the code)."""
    from utils.io import load_snapshot
    load_snapshot(run['snap'])
    load_snapshot(run['last_snap'])
    assert Path(run['exp'] / 'checkpoint.pth').stat().st_size > 0
    shutil.rmtree(run['tmp'] / 'fine_tune', ignore_errors=True)
