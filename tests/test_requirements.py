"""The requirement files agree: with the code's imports, with each other, and tools/pins.py keeps an outside torch."""
import ast
import functools
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT
from tools import pins

PIPELINE = ['net', 'utils', 'tools', '*.py']  # what `make demo` and the scripts run
PEERS = ['tests', 'benchmarks']  # may also use what requirements-dev.txt installs
DEV_TOOLS = {'tools/pins.py'}  # run in the dev venv only (make lock)
OPTIONAL = {'ImportError', 'ModuleNotFoundError', 'Exception', 'BaseException'}


def requirements(path):
    """{canonical name: Requirement} of a requirements file, read by packaging (not by tools/pins.py)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


RUNTIME, DEV, LOCK = (requirements(ROOT / name) for name in ('requirements.txt', 'requirements-dev.txt', 'requirements.lock'))


def _optional(node, parents):
    """Whether an import sits in a try whose handlers catch a failed import."""
    for parent in parents:
        if isinstance(parent, ast.Try) and any(node in ast.walk(stmt) for stmt in parent.body):
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if handler.type is None or any(getattr(n, 'id', None) in OPTIONAL for n in names):
                    return True
    return False


def third_party_imports(path):
    """Top-level module names path imports, leaving out the standard library, the repo's own and optional ones."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    own = {p.stem for p in ROOT.glob('*.py')} | {p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file()}
    own |= {p.stem for p in path.parent.glob('*.py')} | {'conftest'}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        chain, p = [], node
        while p in parents:
            p = parents[p]
            chain.append(p)
        if _optional(node, chain):
            continue
        found |= {n.split('.')[0] for n in names} - set(sys.stdlib_module_names) - own - {'__future__'}
    return found


def files(patterns):
    out = []
    for pattern in patterns:
        out += sorted(ROOT.glob(pattern)) if pattern.endswith('.py') else sorted((ROOT / pattern).rglob('*.py'))
    return out


@functools.lru_cache(maxsize=None)
def _providers():
    return metadata.packages_distributions()


def distributions_of(module):
    dists = _providers().get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    return {canonicalize_name(d) for d in dists}


@pytest.mark.parametrize('kind', ['pipeline', 'peers'])
def test_every_imported_package_is_required(kind):
    allowed, sources = (RUNTIME, files(PIPELINE)) if kind == 'pipeline' else ({**RUNTIME, **DEV}, files(PEERS))
    missing = []
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        ok = {**RUNTIME, **DEV} if rel in DEV_TOOLS else allowed
        for module in third_party_imports(path):
            if not distributions_of(module) & set(ok):
                missing.append(f"{rel}: {module}")
    assert not missing, f"imported but not in {'requirements.txt' if kind == 'pipeline' else 'requirements*.txt'}: {missing}"
    assert sources and any(third_party_imports(p) for p in sources)


def test_the_import_check_sees_what_it_must(tmp_path):
    # the checker itself: a stdlib, a plain, a dotted, an optional, a local and a function's import
    code = ("import os\nimport numpy as np\nfrom sklearn.model_selection import StratifiedKFold\n"
            "from utils.errors import UserError\ntry:\n    import pynvml\nexcept Exception:\n    pass\n"
            "def f():\n    import cv2\n")
    path = tmp_path / 'probe.py'
    path.write_text(code)
    assert third_party_imports(path) == {'numpy', 'sklearn', 'cv2'}
    assert distributions_of('cv2') == {'opencv-python-headless'} and distributions_of('sklearn') == {'scikit-learn'}


def test_runtime_and_dev_name_different_packages_with_ranges():
    assert RUNTIME and DEV and not set(RUNTIME) & set(DEV)
    for name, req in {**RUNTIME, **DEV}.items():
        assert req.specifier, f"{name} has no version range"
        assert any(s.operator in ('>=', '==', '~=') for s in req.specifier), f"{name} has no lower bound"
        assert not req.marker and not req.extras and not req.url, name


def test_lock_pins_every_requirement_within_its_range():
    for name, req in LOCK.items():
        (spec,) = req.specifier
        assert spec.operator == '==' and '*' not in spec.version, f"the lock does not pin {name} exactly: {req}"
    for name, req in {**RUNTIME, **DEV}.items():
        assert name in LOCK, f"requirements.lock has no pin for {name}; run make lock"
        pinned = next(iter(LOCK[name].specifier)).version
        assert req.specifier.contains(Version(pinned), prereleases=True), \
            f"requirements.lock pins {name}=={pinned}, outside {req.specifier} of the requirements"


def test_pins_reads_the_files_as_packaging_does():
    """tools/pins.py runs before anything is installed, so it has its own small reader; it must agree."""
    ranges = {**pins.read_requirements(ROOT / 'requirements.txt'), **pins.read_requirements(ROOT / 'requirements-dev.txt')}
    assert set(ranges) == set(RUNTIME) | set(DEV)
    assert pins.read_lock() == {name: next(iter(req.specifier)).version for name, req in LOCK.items()}
    versions = ['0.25.9', '0.26', '0.26.0', '1.0', '2.4.6', '2.11.0+cu130', '2.10.1', '2.14.1', '3.0', '4.69.9',
                '4.70.1', '1.9.1', '2.0.7', '2.0.8', '5.0.0.93', '6.0']
    for name, specs in ranges.items():
        for v in versions:
            assert pins.satisfies(v, specs) == RUNTIME.get(name, DEV.get(name)).specifier.contains(v), (name, v)


def _fake_dist(site, name, version):
    """An installed distribution as pip writes it: NAME-VERSION.dist-info/METADATA."""
    info = site / f'{name}-{version}.dist-info'
    info.mkdir(parents=True)
    (info / 'METADATA').write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.parametrize('outside_torch, outside_vision, kept', [('2.11.0+cu130', '0.26.0', True), ('2.13.0+cpu', None, True),
                                                                   ('2.5.1', '0.20.1', False)])
def test_constraints_keep_an_outside_torch_in_range(tmp_path, outside_torch, outside_vision, kept):
    """A venv that sees packages from outside (as --system-site-packages does): those in range stay as they are.

    torchvision follows torch: with no torchvision outside, pip picks the release built for the outside torch.
    """
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    outside = tmp_path / 'system-site'
    _fake_dist(outside, 'torch', outside_torch)
    if outside_vision:
        _fake_dist(outside, 'torchvision', outside_vision)
    _fake_dist(outside, 'numpy', '1.26.4')  # out of range: the venv gets the pinned one
    _fake_dist(outside, 'nvidia_cublas', '12.8.4.1')  # a dependency: whatever its version
    site = next((venv / 'lib').glob('python3*/site-packages'))
    (site / 'outside.pth').write_text(f"{outside}\n")
    inside = site / 'pandas-3.1.1.dist-info'  # installed in the venv itself: stays pinned
    _fake_dist(site, 'pandas', '3.1.1')
    assert inside.is_dir()
    out = tmp_path / 'constraints.txt'
    r = subprocess.run([str(venv / 'bin' / 'python'), str(ROOT / 'tools' / 'pins.py'), 'constraints', str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pinned = pins.read_requirements(out)
    lock = pins.read_lock()
    assert pinned['numpy'] == [('==', lock['numpy'])] and pinned['pandas'] == [('==', lock['pandas'])]
    assert 'nvidia-cublas' not in pinned
    if kept:
        assert pinned['torch'] == [('==', outside_torch)] and f"torch {outside_torch}" in r.stdout
        if outside_vision:
            assert pinned['torchvision'] == [('==', outside_vision)] and f"torchvision {outside_vision}" in r.stdout
        else:
            assert 'torchvision' not in pinned and 'torchvision (the release for torch)' in r.stdout
    else:
        assert pinned['torch'] == [('==', lock['torch'])] and pinned['torchvision'] == [('==', lock['torchvision'])]
        assert 'torch' not in r.stdout
    assert set(pinned) | {'torchvision', 'nvidia-cublas'} == set(lock)


def test_constraints_outside_a_venv_pin_everything(tmp_path):
    out = tmp_path / 'constraints.txt'
    code = textwrap.dedent(f"""
        import sys
        sys.prefix = sys.base_prefix  # as in a Python that is not a venv
        from tools import pins
        pins.write_constraints({str(out)!r})
    """)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert pins.read_requirements(out) == {name: [('==', v)] for name, v in pins.read_lock().items()}
