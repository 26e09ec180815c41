"""No network at import: the scripts start on a machine without network access, without waiting.

albumentations 2.x asks the package index for a newer version when it is imported (a 2 s timeout
and a warning line offline) unless NO_ALBUMENTATIONS_UPDATE is set; net/augmentations.py sets it.
Each command here runs in a fresh interpreter whose sitecustomize records every attempt to resolve
a host name or open a connection, and refuses it.
"""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SITECUSTOMIZE = '''
import os
import socket

_LOG = os.environ['SALT_NET_LOG']


def _refuse(what):
    def blocked(*args, **kwargs):
        with open(_LOG, 'a') as f:
            f.write(f"{what} {args[1:] if what.startswith('socket.') else args}\\n")
        raise OSError(f"network blocked by the test: {what}")
    return blocked


socket.socket.connect = _refuse('socket.connect')
socket.socket.connect_ex = _refuse('socket.connect_ex')
socket.getaddrinfo = _refuse('getaddrinfo')
socket.create_connection = _refuse('create_connection')
'''


def run_offline(tmp_path, name, argv):
    """Start `python argv...` in the repo with the network blocked; returns (process, attempts file)."""
    site = tmp_path / 'site'
    site.mkdir(exist_ok=True)
    (site / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    log = tmp_path / f'{name}.net'
    log.write_text('')
    env = {k: v for k, v in os.environ.items() if k != 'NO_ALBUMENTATIONS_UPDATE'}
    env.update(PYTHONPATH=str(site), SALT_NET_LOG=str(log))
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, log


def test_imports_and_help_open_no_connection(tmp_path):
    commands = {
        # the control: bare albumentations does try, so the blocking above would see it
        'control': ['-c', 'import albumentations'],
        'augmentations': ['-c', 'import net.augmentations'],
        'train': ['train.py', '--help'],
        'train_folds': ['train_folds.py', '--help'],
    }
    started = {name: run_offline(tmp_path, name, argv) for name, argv in commands.items()}
    results = {}
    for name, (proc, log) in started.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err, log.read_text())
    code, _, err, attempts = results.pop('control')
    if not attempts:
        pytest.fail(f"bare `import albumentations` attempted no connection, so this test cannot see one: {err[-500:]}")
    for name, (code, out, err, attempts) in results.items():
        assert code == 0, (name, err[-2000:])
        assert attempts == '', f"{name} tried the network: {attempts}"
        assert 'Error fetching version info' not in err and 'albumentations' not in err.lower(), (name, err)
    assert 'usage:' in results['train'][1] and 'usage:' in results['train_folds'][1]
