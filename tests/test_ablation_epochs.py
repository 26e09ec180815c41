"""benchmarks/ablation_epochs.py: rows of the recipe's two stages at a fixed epoch count, on a tiny cut of the real data."""
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, stacked_cut


def run(args):
    return subprocess.run([sys.executable, 'benchmarks/ablation_epochs.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.real_data
def test_rows_train_both_stages_score_by_coverage_and_resume(tmp_path):
    data = stacked_cut(tmp_path / 'data', 64, 8)
    out = tmp_path / 'ablation.md'
    recipe = tmp_path / 'cpu.toml'  # a copy of the CPU recipe, edited below
    recipe.write_text((ROOT / 'recipes' / 'cpu.toml').read_text())
    args = ['--data_dir', str(data), '--epochs', '1,1', '--rows', 'base,sym', '--jobs', '2', '--recipe', str(recipe),
            '--exp_root', str(tmp_path / 'exp'), '--out', str(out)]
    r = run(args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # base and sym differ in stage 2 only: one stage-1 run serves both
    assert r.stdout.count('] stage 1: python3 train.py') == 1 and '(finished, shared)' in r.stdout, r.stdout
    table = out.read_text()
    rows = {line.split('|')[1].strip(): [c.strip() for c in line.strip('|').split('|')]
            for line in table.splitlines() if line.startswith('| base') or line.startswith('| sym')}
    assert set(rows) == {'base', 'sym'}
    for cells in rows.values():
        assert cells[2] == '1 + 1'
        assert 0.0 <= float(cells[4].split()[0]) <= 1.0 and 0.0 <= float(cells[5].split()[0]) <= 1.0
        # a salt-head model: the emptied score is there, and the coverage buckets of a 16-image fold
        assert cells[6] != '-'
        assert all(c == '-' or 0.0 <= float(c) <= 1.0 for c in cells[7:11])
        assert re.search(r', \d{4}-\d{2}-\d{2}$', cells[12]), cells[12]  # the row's CPU and date
    assert '--loss combined_sym' in rows['sym'][11] and 'combined_sym' not in rows['base'][11]
    saved = json.loads(out.with_suffix('.json').read_text())
    assert saved['epochs'] == [1, 1] and saved['arch'] == 'unet_plain_ds_w8'
    stage2 = saved['rows']['sym']['commands'][1]
    assert stage2.startswith(f'--recipe {recipe} --stage stage2 ') and stage2.endswith('--loss combined_sym')
    assert saved['rows']['sym']['recipe']['stage2']['lr'] == 3e-4
    assert f"--init {tmp_path / 'exp'}" in stage2
    config = json.loads((tmp_path / 'exp' / 'unet_plain_ds_w8_1_1' / 'sym' / 'stage2' / 'train_config.json').read_text())
    assert (config['loss'], config['optimizer'], config['lr'], config['n_epochs'], config['schedule_by'],
            config['max_minutes']) == ('combined_sym', 'adam_1e-3', 3e-4, 1, 'epoch', 0.0)
    # the same command again trains nothing: every row is in the JSON with the same commands
    again = run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert '] stage 1: python3 train.py' not in again.stdout
    assert json.loads(out.with_suffix('.json').read_text())['rows'] == saved['rows']
    # an edited recipe file trains its rows again, though the commands that name it are the same
    recipe.write_text(recipe.read_text().replace('lr = 3e-4 ', 'lr = 1e-5 '))
    base = run([*args, '--rows', 'base'])
    assert base.returncode == 0 and '[base] stage 2: python3 train.py' in base.stdout, base.stderr[-3000:]
    assert '[base] stage 1: python3 train.py' not in base.stdout  # stage 1's options are not the ones edited
    assert json.loads(out.with_suffix('.json').read_text())['rows']['base']['recipe']['stage2']['lr'] == 1e-5


def test_unknown_rows_and_bad_epochs_are_one_line():
    for bad, what in ((['--rows', 'base,nope'], 'unknown rows'), (['--epochs', '16'], '--epochs'),
                      (['--epochs', '0,4'], 'positive')):
        r = run(['--data_dir', 'nowhere', *bad])
        assert r.returncode == 2 and what in r.stderr and 'Traceback' not in r.stderr
