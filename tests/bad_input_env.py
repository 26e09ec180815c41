"""What the bad-input tests share: one small stacked data folder and one tiny trained run per session
(built once, then copied per case), and a runner that starts the scripts as real processes.

The runner forks each script from one server process that has imported torch already, so a case
costs the script's own work, not a fresh interpreter's imports; the exit status, stderr and
`__main__` are the script's own.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import ROOT, stacked_cut

# The smallest run that trains: unet_lite, 8 images, one epoch.
LITE = ['--arch', 'unet_lite', '--pretrained', 'none', '--n_epochs', '1', '--limit', '8', '--batch_size', '4',
        '--train_augs', 'train_128_v3', '--val_augs', 'val_128', '--val_transforms', 'crop_from_128', '--threads', '1',
        '--seed', '3']
N_TRAIN, N_TEST = 24, 6


def build(tmp_path_factory):
    """{'data', 'exp', 'snap'}: a stacked, folded cut of the real data and a finished run on it (fold 0),
    made once per session under pytest's base temporary folder; treat them as read-only."""
    base = tmp_path_factory.getbasetemp() / 'bad_input_env'
    env = {'data': base / 'data', 'exp': base / 'exp_fold0'}
    if not (base / 'ready').is_file():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        stacked_cut(env['data'], N_TRAIN, N_TEST, n_folds=3)
        from net.training import main as train
        train([*LITE, '--data_dir', str(env['data']), '--experiment_dir', str(env['exp'])])
        (base / 'ready').write_text('')
    from utils.snapshots import best_snapshot_of
    env['snap'] = best_snapshot_of(env['exp'])
    return env


def copy_env(env, dst):
    """A private copy of the data folder and the run under dst: {'data', 'exp', 'snap', 'masks', 'out'}."""
    dst.mkdir(parents=True, exist_ok=True)
    data = Path(shutil.copytree(env['data'], dst / 'data'))
    exp = Path(shutil.copytree(env['exp'], dst / 'exp_fold0'))
    # The run's config names the data folder it trained on: the copy's, so that nothing reads the original.
    cfg = exp / 'train_config.json'
    config = json.loads(cfg.read_text())
    config.update(data_dir=str(data), folds_csv=str(data / 'train_with_folds.csv'), experiment_dir=str(exp))
    cfg.write_text(json.dumps(config, indent=2, sort_keys=True) + '\n')
    snap = exp / 'snapshots' / env['snap'].name
    out = dst / 'out'
    out.mkdir()
    return {'root': dst, 'data': data, 'exp': exp, 'snap': snap, 'masks': snap.parent / f'val_masks_{snap.name}.npy',
            'out': out}


def rewrite_snapshot(src, dst, change):
    """Save snapshot `src` as `dst` after change(dict) edits it (torch.save, plain data only)."""
    import torch
    snap = torch.load(src, map_location='cpu', weights_only=True)
    change(snap)
    torch.save(snap, dst)


def nan_weights(snap):
    for k, v in snap['model'].items():
        if v.is_floating_point():
            v.fill_(float('nan'))


def make_cycles(c):
    """Turn the copied run into a two-cycle one (snapshots/cycle_0, cycle_1) for predict_se.py."""
    snaps = c['exp'] / 'snapshots'
    for k in (0, 1):
        d = snaps / f'cycle_{k}'
        d.mkdir()
        shutil.copy(c['snap'], d / c['snap'].name)
        shutil.copy(c['masks'], d / c['masks'].name)
    return snaps


def duplicate_row(csv_path, row=1):
    lines = csv_path.read_text().splitlines()
    csv_path.write_text('\n'.join(lines + [lines[row]]) + '\n')


def file_hashes(dirs):
    """{path: sha1} of every file (temporary ones included) under `dirs`."""
    out = {}
    for d in dirs:
        d = Path(d)
        for p in sorted(d.rglob('*')) if d.is_dir() else ([d] if d.exists() else []):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
            elif p.is_symlink():
                out[str(p)] = 'link:' + os.readlink(p)
    return out


def _serve():
    """Read cases (JSON on stdin), run each script in a forked child, write results (JSON) to stdout."""
    import runpy
    import tempfile
    import traceback
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    import albumentations  # noqa: F401  the imports every fork would otherwise repeat
    import torch  # noqa: F401
    import net.augmentations  # noqa: F401
    import net.losses  # noqa: F401
    import net.models  # noqa: F401
    import net.training  # noqa: F401
    import net.tta  # noqa: F401
    cases = json.load(sys.stdin)
    results = []
    for case in cases:
        before = file_hashes(case['watch'])
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            pid = os.fork()
            if pid == 0:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                os.chdir(case['cwd'])
                script = str(Path(case['argv'][0]).resolve())
                sys.argv = [script] + case['argv'][1:]
                sys.path[0] = str(Path(script).parent)
                code = 0
                try:
                    runpy.run_path(script, run_name='__main__')
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                    if not isinstance(e.code, (int, type(None))):
                        print(e.code, file=sys.stderr)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            out.seek(0)
            err.seek(0)
            results.append({'code': os.waitstatus_to_exitcode(status), 'stdout': out.read().decode(errors='replace'),
                            'stderr': err.read().decode(errors='replace'), 'before': before,
                            'after': file_hashes(case['watch'])})
    json.dump(results, sys.stdout)


def run_scripts(cases, timeout=900):
    """Run [{'argv': [script relative to the repo, ...], 'watch': [paths]}] (cwd: the repo); a result per case."""
    for c in cases:
        c['argv'] = [str(a) for a in c['argv']]
        c['argv'][0] = str(ROOT / c['argv'][0])
        c['watch'] = [str(d) for d in c.get('watch', [])]
        c['cwd'] = str(c.get('cwd', ROOT))
    r = subprocess.run([sys.executable, __file__, '--serve'], input=json.dumps(cases), capture_output=True,
                       text=True, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def visible_lines(stderr):
    """The lines a terminal shows (tqdm redraws after carriage returns)."""
    return [ln.rsplit('\r', 1)[-1].strip() for ln in stderr.split('\n') if ln.rsplit('\r', 1)[-1].strip()]


def assert_refused(result, phrases=()):
    """A non-zero exit, one `prog: error: ...` line on stderr holding every phrase, no traceback, and no
    file changed, appeared or went under the watched folders."""
    lines = visible_lines(result['stderr'])
    assert 'Traceback' not in result['stderr'], result['stderr']
    assert result['code'] != 0, (result['code'], result['stdout'][-2000:], result['stderr'])
    assert len(lines) == 1, result['stderr']
    assert ': error: ' in lines[0], lines[0]
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    changed = sorted(k for k in set(result['after']) | set(result['before'])
                     if result['after'].get(k) != result['before'].get(k))
    assert not changed, f"changed files: {changed}"
    return lines[0]


def write_probs(path, n, value=0.5, dtype=np.float16):
    np.save(path, np.full((n, 101, 101), value, dtype))
    return path


if __name__ == '__main__' and sys.argv[1:] == ['--serve']:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _serve()
