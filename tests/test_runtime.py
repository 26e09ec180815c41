"""Device, precision and loader decisions: every case a GPU machine meets, checked on the CPU."""
import hashlib
import subprocess
import sys

import pytest
import torch

from net.runtime import (cpu_flags, cpu_has_native_bf16, is_out_of_memory, out_of_memory_is_user_error, resolve_amp,
                         resolve_device, resolve_loader, torchrun_env)
from utils.errors import UserError

ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('name,count,local_rank,want', [
    ('auto', 0, None, 'cpu'),
    ('cpu', 0, None, 'cpu'),
    ('cpu', 4, None, 'cpu'),
    ('auto', 1, None, 'cuda:0'),      # the crash of the first GPU run: a bare 'cuda' reached set_device
    ('cuda', 1, None, 'cuda:0'),
    ('CUDA', 1, None, 'cuda:0'),
    ('cuda:0', 1, None, 'cuda:0'),
    ('auto', 4, None, 'cuda:0'),
    ('cuda:3', 4, None, 'cuda:3'),
    ('auto', 4, 2, 'cuda:2'),         # a torchrun rank picks its own GPU
    ('cuda', 4, 3, 'cuda:3'),
    ('cuda:1', 4, 3, 'cuda:1'),       # an explicit index wins over the rank
    ('cpu', 4, 2, 'cpu'),
])
def test_resolve_device(name, count, local_rank, want):
    dev = resolve_device(name, count, local_rank)
    assert str(dev) == want
    if dev.type == 'cuda':
        assert dev.index is not None


@pytest.mark.parametrize('name,count,local_rank,words', [
    ('cuda', 0, None, 'no CUDA GPU is visible'),
    ('cuda:0', 0, None, 'no CUDA GPU is visible'),
    ('cuda:2', 2, None, 'only 2 are visible'),
    ('auto', 1, 1, "local rank 1"),
    ('gpu', 1, None, "unknown device 'gpu'"),
    ('cuda:x', 1, None, "unknown device"),
    ('mps', 0, None, "unknown device 'mps'"),
    ('', 0, None, "unknown device"),
])
def test_resolve_device_refuses(name, count, local_rank, words):
    with pytest.raises(UserError) as e:
        resolve_device(name, count, local_rank)
    assert words in str(e.value) and '--device' in str(e.value)
    assert '\n' not in str(e.value)


def test_torchrun_env():
    assert torchrun_env({}) is None
    assert torchrun_env({'LOCAL_RANK': '0'}) is None
    assert torchrun_env({'RANK': '3', 'LOCAL_RANK': '1', 'WORLD_SIZE': '4'}) == (3, 1, 4)
    assert torchrun_env({'RANK': '0', 'WORLD_SIZE': '1'}) == (0, 0, 1)
    with pytest.raises(UserError):
        torchrun_env({'RANK': 'a', 'WORLD_SIZE': '1'})


def test_resolve_amp_and_loader():
    assert resolve_amp('auto', 'cuda', cuda_bf16=True) == torch.bfloat16
    assert resolve_amp('auto', 'cuda', cuda_bf16=False) == torch.float16
    assert resolve_amp('auto', 'cpu') is None
    assert resolve_amp('off', 'cuda', True) is None
    assert resolve_amp('fp16', 'cpu') == torch.float16
    assert resolve_loader('auto', 'cuda', 0) == 'device'
    assert resolve_loader('auto', 'cpu', 0) == 'device'
    assert resolve_loader('auto', 'cpu', 2) == 'prefetch'
    assert resolve_loader('auto', 'cuda', 4) == 'prefetch'
    assert resolve_loader('device', 'cpu', 0) == 'device'
    with pytest.raises(UserError):
        resolve_loader('device', 'cuda', 2)
    with pytest.raises(UserError):
        resolve_loader('gpu', 'cuda', 0)


# flags as /proc/cpuinfo lists them on the CPU classes the demo and the recipe meet
ICE_LAKE = 'fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni'
COOPER_LAKE = ICE_LAKE + ' avx512_bf16'
SAPPHIRE_RAPIDS = COOPER_LAKE + ' amx_bf16 amx_tile amx_int8'
EPYC_ZEN2 = 'fpu sse2 avx avx2 fma'


@pytest.mark.parametrize('flags,native', [(EPYC_ZEN2, False), (ICE_LAKE, False), (COOPER_LAKE, True),
                                          (SAPPHIRE_RAPIDS, True)])
def test_native_bf16_is_read_from_the_flags(tmp_path, flags, native):
    """oneDNN calls bf16 supported on any AVX-512 CPU; only the bf16 instructions make it pay (Ice Lake: 1.7x slower)."""
    info = tmp_path / 'cpuinfo'
    info.write_text(f'processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\nprocessor\t: 1\n')
    assert cpu_flags(info) == frozenset(flags.split())
    assert cpu_has_native_bf16(cpu_flags(info)) is native


def test_native_bf16_without_x86_flags_asks_onednn(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nFeatures\t: fp asimd bf16\n')
    assert cpu_flags(info) is None and cpu_flags(tmp_path / 'missing') is None
    assert cpu_has_native_bf16(frozenset()) is False
    assert isinstance(cpu_has_native_bf16(), bool)


def test_out_of_memory_becomes_one_line():
    oom = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)
    assert is_out_of_memory(oom('CUDA out of memory. Tried to allocate 2.00 GiB'))
    assert is_out_of_memory(RuntimeError('CUDA error: out of memory'))
    assert not is_out_of_memory(RuntimeError('shape mismatch'))
    with pytest.raises(UserError) as e:
        with out_of_memory_is_user_error(64):
            raise oom('CUDA out of memory. Tried to allocate 2.00 GiB')
    assert '--batch_size 64' in str(e.value) and 'e.g. 32' in str(e.value)
    with pytest.raises(ValueError):
        with out_of_memory_is_user_error(64):
            raise ValueError('not memory')


def _tree_hashes(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.real_data
def test_train_out_of_memory_exits_2_and_keeps_the_run(tmp_path):
    """An out-of-memory error mid-run (simulated: the model raises it) is one line and changes nothing on disk."""
    from conftest import stacked_cut
    data = stacked_cut(tmp_path / 'data', 48, 8)
    exp = tmp_path / 'exp'
    base = [sys.executable, 'train.py', '--arch', 'unet_plain_w8', '--loss', 'BCE', '--train_augs', 'train_112_v3',
            '--val_augs', 'val_112', '--val_transforms', 'crop_from_112', '--pretrained', 'none', '--batch_size', '8',
            '--data_dir', str(data), '--experiment_dir', str(exp), '--device', 'cpu', '--threads', '1']
    first = subprocess.run(base + ['--n_epochs', '1'], cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # --resume rewrites the config (a new --n_epochs) and un-finishes the run; what was trained stays
    kept = ('checkpoint.pth', 'snapshots', 'logs')
    before = {k: v for k, v in _tree_hashes(exp).items() if k.parts[0] in kept}
    assert any(k.parts[0] == 'snapshots' for k in before)
    # sitecustomize-style hook: the model's forward raises CUDA's out-of-memory error on its 2nd call
    hook = tmp_path / 'hook'
    hook.mkdir()
    (hook / 'sitecustomize.py').write_text(
        "import torch\n"
        "from net.models.common import SegNet\n"
        "oom = getattr(torch, 'OutOfMemoryError', None) or torch.cuda.OutOfMemoryError\n"
        "calls = [0]\n"
        "forward = SegNet.forward\n"
        "def failing(self, *a, **k):\n"
        "    calls[0] += 1\n"
        "    if calls[0] >= 2:\n"
        "        raise oom('CUDA out of memory. Tried to allocate 20.00 GiB')\n"
        "    return forward(self, *a, **k)\n"
        "SegNet.forward = failing\n")
    import os
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hook), str(ROOT), os.environ.get('PYTHONPATH')])))
    r = subprocess.run(base + ['--n_epochs', '3', '--resume'], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if 'error' in line]
    assert len(lines) == 1 and 'ran out of memory' in lines[0] and '--batch_size 8' in lines[0], r.stderr
    assert 'Traceback' not in r.stderr
    assert {k: v for k, v in _tree_hashes(exp).items() if k.parts[0] in kept} == before
    assert not list(exp.rglob('.*.tmp*'))
