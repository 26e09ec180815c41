"""`make gpu-check`'s script, run on the CPU with --quick so that it cannot rot on machines without a GPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]

ROWS = ['bare loop', 'train.py recipe', 'train.py --loader prefetch', 'train.py --amp off', 'train.py --amp fp16',
        'train.py --channels_last off', 'train.py --batch_size', 'train.py --compile default',
        'train.py --compile reduce-overhead', 'train_border.py', 'torchrun --nproc_per_node=1', 'train.py --cycles 2',
        'optimize_threshold.py', 'predict.py', 'predict_tta.py', 'predict_fold_avg.py', 'predict_se.py']


def test_gpu_check_runs_every_path_on_the_cpu(tmp_path):
    from conftest import stacked_cut
    data = stacked_cut(tmp_path / 'data', 48, 12)
    out = tmp_path / 'out'
    r = subprocess.run([sys.executable, 'benchmarks/gpu_check.py', '--device', 'cpu', '--quick', '--data_dir', str(data),
                        '--work', str(tmp_path / 'work'), '--out', str(out), '--loader', 'device'],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / 'gpu_check.json').read_text())
    rows = {row['check']: row for row in report['rows']}
    for name in ROWS:
        match = [row for check, row in rows.items() if check.startswith(name)]
        assert match, (name, sorted(rows))
        assert match[0]['result'] in ('pass', 'skip'), match[0]
    # on the CPU only compilation and fp16 may be skipped; every training row has its figures
    skipped = sorted(check for check, row in rows.items() if row['result'] == 'skip')
    assert all('compile' in s or 'fp16' in s for s in skipped), skipped
    recipe = next(row for check, row in rows.items() if check.startswith('train.py recipe'))
    assert recipe['epoch_s'] > 0 and recipe['bare_s'] > 0 and recipe['ratio'] > 0 and recipe['first_epoch_s'] > 0
    assert recipe['busy_pct'] is None and recipe['peak_gb'] is None  # no GPU: no busy share, no GPU memory
    table = r.stdout
    assert 'x bare' in table and 'GPU busy %' in table and 'predict_se.py' in table
    assert (out / 'gpu_check.md').read_text().count('| pass |') >= len(ROWS) - 3
