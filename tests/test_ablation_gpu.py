"""benchmarks/ablation_gpu.py: rows of the whole recipe, each scored out of fold, on a tiny budget on the CPU."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_data

ROOT = Path(__file__).resolve().parents[1]


def test_ablation_rows_run_the_recipe_and_tabulate_their_scores(tmp_path):
    from conftest import cut_real
    src = cut_real(tmp_path / 'src', 48, 12)
    src.chmod(0o555)  # the runner links the data in and never writes to it
    out = tmp_path / 'ablation_gpu.md'
    try:
        r = subprocess.run([sys.executable, 'benchmarks/ablation_gpu.py', '--data_dir', str(src), '--preset', 'smoke',
                            '--rows', 'base,w32', '--device', 'cpu', '--work', str(tmp_path / 'work'),
                            '--exp_root', str(tmp_path / 'exp'), '--out', str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        src.chmod(0o755)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith('| base') or line.startswith('| w32')]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip('|').split('|')]
        assert 0.0 <= float(cells[4]) <= 1.0 and float(cells[3]) > 0 and cells[6] == '8'
    assert '--arch unet_plain_ds_w32' in rows[1]
    import json
    assert json.loads((tmp_path / 'exp' / 'w32.recipe.json').read_text())['arch'] == 'unet_plain_ds_w32'
    assert not (src / 'train_images.npy').exists()
