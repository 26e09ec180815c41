"""recipe.py, the whole recipe as one command, on a tiny budget (the GPU preset's steps, on the CPU)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_smoke_runs_every_step_and_resumes(tmp_path):
    from conftest import cut_real
    data = cut_real(tmp_path / 'data', 48, 12)  # raw PNGs: the recipe stacks and folds them itself
    exp = tmp_path / 'exp' / 'r'
    # a user's own recipe: a copy of a preset's file, edited
    mine = tmp_path / 'mine.toml'
    mine.write_text((ROOT / 'recipes' / 'smoke.toml').read_text().replace('batch_size = 8', 'batch_size = 4'))
    cmd = [sys.executable, 'recipe.py', '--recipe', str(mine), '--data_dir', str(data), '--folds', '0-1',
           '--experiment_dir', str(exp), '--device', 'cpu']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (data / 'train_images.npy').is_file() and (data / 'train_with_folds.csv').is_file()
    for stage in ('s1', 's2'):
        for k in (0, 1):
            assert (exp.parent / f'r_{stage}_fold{k}' / 'summary.json').is_file()
    cfg = json.loads((exp.parent / 'r_s2_fold1' / 'train_config.json').read_text())
    assert cfg['init'].startswith(str(exp.parent / 'r_s1_fold1')) and cfg['loss'] == 'combined_sym'
    assert cfg['batch_size'] == 4 and cfg['schedule_by'] == 'time' and cfg['train_augs'] == 'train_112_v3'
    assert json.loads((exp.parent / 'r_s1_fold0' / 'train_config.json').read_text())['loss'] == 'combined_bce'
    record = json.loads((exp.parent / 'r.recipe.json').read_text())
    assert record['recipe'] == str(mine) and record['batch_size'] == 4
    sub = pd.read_csv(record['submission'], dtype=str, keep_default_na=False)
    assert list(sub.columns) == ['id', 'rle_mask'] and len(sub) == 12
    assert record['images'] == 2 * 8  # --limit 32 validates 32 // 4 images of each fold
    assert 0.0 <= record['out_of_fold_score'] <= 1.0
    assert 'out-of-fold score' in r.stdout
    # the same command again: every fold is finished, nothing trains again
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count('skipped') >= 4


def test_recipe_pseudo_stage_trains_on_the_pseudo_data_and_reports_both_scores(tmp_path):
    from conftest import cut_real
    data = cut_real(tmp_path / 'data', 48, 12)
    exp = tmp_path / 'exp' / 'r'
    cmd = [sys.executable, 'recipe.py', '--preset', 'smoke', '--data_dir', str(data), '--folds', '0',
           '--experiment_dir', str(exp), '--device', 'cpu', '--pseudo']
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pseudo = exp.parent / 'r_pseudo_data'
    made = json.loads((pseudo / 'pseudo_labels.json').read_text())
    assert made['labeled'] == 48 and made['test_images'] == 12 and 0 <= made['taken'] <= 12
    # stage 2's averaged test probabilities fed it, and its threshold is the out-of-fold one
    assert made['probs'] == str(exp.parent / 'r_s2.submission.npy')
    assert made['threshold'] == json.loads((exp.parent / 'r_s2.oof.best.json').read_text())['threshold']
    cfg = json.loads((exp.parent / 'r_s3_fold0' / 'train_config.json').read_text())
    assert Path(cfg['data_dir']) == pseudo.resolve() and cfg['init'].startswith(str(exp.parent / 'r_s2_fold0'))
    record = json.loads((exp.parent / 'r.recipe.json').read_text())
    assert record['submission'] == str(exp.parent / 'r.submission.csv')
    assert (exp.parent / 'r_s2.submission.csv').is_file() and (exp.parent / 'r.submission.csv').is_file()
    assert record['stage_minutes_per_fold'] == [0.05, 0.03, 0.03]
    assert 0.0 <= record['out_of_fold_score_before_pseudo'] <= 1.0 and 0.0 <= record['out_of_fold_score'] <= 1.0
    assert record['pseudo_labels']['taken'] == made['taken']
