"""`make demo`'s driver, shortened: every step runs and the submission is scored on held-out images."""
import subprocess
import sys

import pandas as pd

from conftest import ROOT


def test_demo_end_to_end(tmp_path):
    data, exp = tmp_path / 'demo_data', tmp_path / 'exp'
    r = subprocess.run([sys.executable, 'tools/demo.py', '--minutes', '0.4', '--n_train', '240', '--n_test', '60',
                        '--data', str(data), '--exp', str(exp)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()
    assert last[-2].startswith('demo done: held-out score')
    sub = pd.read_csv(exp / 'predictions' / 'demo_submission.csv', dtype=str, keep_default_na=False)
    truth = pd.read_csv(data / 'test_truth.csv', dtype=str, keep_default_na=False)
    assert list(sub['id']) == list(truth['id'])
    for step in ('stack_and_save.py', 'make_folds.py', 'train.py', 'optimize_threshold.py', 'predict_tta.py', 'evaluate.py'):
        assert f'{step} ' in r.stdout


def test_demo_steps_stream_their_output(tmp_path):
    """A step's lines reach the terminal while it runs (make demo shows each epoch as it ends)."""
    flag = tmp_path / 'seen'
    inner = (f"import pathlib, time; print('first', flush=True); f = pathlib.Path({str(flag)!r}); "
             f"t = time.time()\nwhile not f.exists() and time.time() - t < 60: time.sleep(0.05)\n"
             f"print('second' if f.exists() else 'never seen')")
    (tmp_path / 'step.py').write_text(inner)
    driver = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tools.demo import run; "
              f"run('python3 {tmp_path / 'step.py'}')")
    proc = subprocess.Popen([sys.executable, '-c', driver], stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == 'first':
            flag.touch()  # only a streamed 'first' lets the step finish
    assert proc.wait(timeout=90) == 0
    assert lines[-2:] == ['first', 'second'], lines
