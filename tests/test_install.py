"""The project installs as a package, and its entry scripts still run without that install.

Tests import net/ and utils/ from the editable install (pyproject.toml); the original's commands
(`python3 train.py`, `cd utils && python3 stack_and_save.py`) must keep working after a plain
`pip install -r requirements.txt`, and the scripts of utils/, tools/ and benchmarks/ run as files
import their own checkout's modules, not an installed one's, through one path bootstrap.
"""
import ast
import os
import site
import subprocess
import sys
import tomllib

import numpy as np

from conftest import ROOT
from tools.synthetic import generate

BOOTSTRAP = ROOT / 'utils' / '_repo_root.py'


def _changes_sys_path(tree):
    """Line numbers where code assigns to sys.path (or an item of it) or calls one of its mutating methods."""
    def is_sys_path(node):
        return (isinstance(node, ast.Attribute) and node.attr == 'path' and isinstance(node.value, ast.Name)
                and node.value.id == 'sys')
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            if is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)):
                lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value) \
                and node.func.attr in ('insert', 'append', 'extend', 'remove', 'pop', 'clear', '__setitem__'):
            lines.append(node.lineno)
    return sorted(lines)


def test_sys_path_is_changed_in_one_place_outside_the_tests():
    found = {}
    for path in sorted(ROOT.rglob('*.py')):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith('.') or rel.parts[0] in ('tests', 'build') or 'site-packages' in rel.parts:
            continue
        lines = _changes_sys_path(ast.parse(path.read_text(), str(path)))
        if lines:
            found[rel.as_posix()] = lines
    assert list(found) == ['utils/_repo_root.py'], found


def test_the_check_finds_every_form():
    code = ("import sys\nsys.path.insert(0, 'a')\nsys.path.append('b')\nsys.path[0] = 'c'\n"
            "sys.path += ['d']\nsys.path = []\nprint(sys.path[0])\n")
    assert _changes_sys_path(ast.parse(code)) == [2, 3, 4, 5, 6]


def test_pyproject_names_every_package_and_top_level_script():
    conf = tomllib.loads((ROOT / 'pyproject.toml').read_text())
    tool = conf['tool']['setuptools']
    assert sorted(tool['py-modules']) == sorted(p.stem for p in ROOT.glob('*.py'))
    include = tool['packages']['find']['include']
    packages = sorted(p.name for p in ROOT.iterdir() if (p / '__init__.py').is_file())
    assert packages == ['benchmarks', 'net', 'salt', 'tools', 'utils']
    assert sorted(i.rstrip('*') for i in include) == packages
    # one list of requirements: requirements.txt, which the lock and tools/pins.py read
    assert conf['project']['dynamic'] == ['dependencies']
    assert conf['tool']['setuptools']['dynamic']['dependencies'] == {'file': ['requirements.txt']}


def _python_without_the_project():
    """argv and env of this Python with its packages importable but no .pth file read: the editable
    install of the project (a .pth file) is then absent, as after a plain pip install -r requirements.txt."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONSTARTUP')}
    env['PYTHONPATH'] = os.pathsep.join(site.getsitepackages())
    env['PYTHONNOUSERSITE'] = '1'
    return [sys.executable, '-S'], env


def test_utils_scripts_run_as_files_without_the_project_installed(tmp_path):
    py, env = _python_without_the_project()
    probe = subprocess.run([*py, '-c', 'import numpy, cv2, pandas\nimport utils'], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert 'numpy' not in probe.stderr and "No module named 'utils'" in probe.stderr, probe.stderr  # really not installed

    data = tmp_path / 'data'
    generate(data, n_train=12, n_test=4, seed=1)
    runs = [(ROOT, ['utils/stack_and_save.py', '--data_dir', str(data), '--workers', '1']),     # from the root
            (ROOT / 'utils', ['stack_and_save.py', '--data_dir', os.path.relpath(data, ROOT / 'utils')]),  # the original's form
            (ROOT / 'utils', ['make_folds.py', '--p', str(data / 'train.csv'), '--n', '3']),
            (tmp_path, [str(ROOT / 'utils' / 'make_folds.py'), '--p', 'data/train.csv', '--n', '4'])]
    for cwd, argv in runs:
        r = subprocess.run([*py, *argv], cwd=cwd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cwd, argv, r.stderr)
        assert 'wrote' in r.stdout, r.stdout
    assert np.load(data / 'train_images.npy').shape == (12, 101, 101)
    assert np.load(data / 'test_images.npy').shape == (4, 101, 101)
    folds = (data / 'train_with_folds.csv').read_text().splitlines()
    assert len(folds) == 13 and '4 folds' in r.stdout  # the last run's folds


def test_bootstrap_puts_this_checkout_first_in_place_of_utils(tmp_path):
    """Run as a file from utils/, the script sees the repo root where utils/ was, not utils/ itself
    (whose io.py, data.py would stand in for top-level modules), and imports this checkout's utils."""
    py, env = _python_without_the_project()
    code = ("import sys, runpy\n"
            f"sys.path[0] = {str(ROOT / 'utils')!r}\n"
            "import _repo_root, utils.data\n"
            "print(sys.path[0]); print(utils.data.__file__)\n"
            f"print({str(ROOT / 'utils')!r} in sys.path)\n")
    r = subprocess.run([*py, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, data_file, utils_still_there = r.stdout.split('\n')[:3]
    assert first == str(ROOT)
    assert data_file == str(ROOT / 'utils' / 'data.py')
    assert utils_still_there == 'False'
    assert BOOTSTRAP.is_file()


PROJECT_PACKAGES = ('utils', 'net', 'benchmarks', 'tools', 'salt')


def _imports_the_project(node):
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or '').split('.')[0] in PROJECT_PACKAGES
    if isinstance(node, ast.Import):
        return any(a.name.split('.')[0] in PROJECT_PACKAGES for a in node.names)
    return False


def _is_bootstrap(node):
    return isinstance(node, ast.If) and any(isinstance(n, ast.Import) and n.names[0].name == '_repo_root'
                                            for n in node.body)


def test_every_script_of_tools_and_benchmarks_bootstraps_before_importing_the_project():
    """A script run as a file (it has a __main__ guard) that imports the project anywhere must first run
    the bootstrap at module level; otherwise it imports whichever checkout is installed."""
    missing = []
    for path in sorted([*(ROOT / 'tools').glob('*.py'), *(ROOT / 'benchmarks').glob('*.py'),
                        *(ROOT / 'utils').glob('*.py')]):
        tree = ast.parse(path.read_text(), str(path))
        if "__main__" not in path.read_text() or not any(_imports_the_project(n) for n in ast.walk(tree)):
            continue
        first_boot = next((i for i, n in enumerate(tree.body) if _is_bootstrap(n)), None)
        first_import = next((i for i, n in enumerate(tree.body) if _imports_the_project(n)), len(tree.body))
        if first_boot is None or first_boot > first_import:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_scripts_run_as_files_import_their_own_checkout_before_another_on_the_path(tmp_path):
    """A decoy checkout first on PYTHONPATH (as an installed other clone or worktree would be) is not
    what tools/ and benchmarks/ scripts import when they run as files."""
    decoy = tmp_path / 'decoy'
    for pkg in PROJECT_PACKAGES:
        (decoy / pkg).mkdir(parents=True)
        (decoy / pkg / '__init__.py').write_text("raise ImportError('imported the decoy checkout')\n")
    env = {**os.environ, 'PYTHONPATH': str(decoy)}
    probe = subprocess.run([sys.executable, '-c', 'import utils'], cwd=tmp_path, env=env, capture_output=True,
                           text=True)
    assert 'imported the decoy checkout' in probe.stderr  # the decoy stands first
    for script in ['tools/evaluate.py', 'tools/synthetic.py', 'tools/pseudo_labels.py',
                   'benchmarks/bare_fold_avg.py', 'benchmarks/gpu_check.py']:
        r = subprocess.run([sys.executable, str(ROOT / script), '--help'], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0 and 'usage' in r.stdout, (script, r.stderr)
