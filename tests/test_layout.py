"""The house rules, checked on the source: imports point down, no script imports another, one owner
of snapshot names."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in ROOT.glob('*.py'))


def sources(*folders, top=False):
    files = [p for f in folders for p in sorted((ROOT / f).rglob('*.py'))]
    return files + (sorted(ROOT.glob('*.py')) if top else [])


def imported(path):
    """Every module name a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_utils_never_imports_net_or_tools():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split('.')[0] in ('net', 'tools'))
           for p in sources('utils')}
    assert {k: v for k, v in bad.items() if v} == {}


def test_net_never_imports_tools_or_a_script():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split('.')[0] in ('tools', *SCRIPTS))
           for p in sources('net')}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_script_imports_another():
    bad = {p.name: sorted(m for m in imported(p) if m in SCRIPTS) for p in sources('tools', 'benchmarks', top=True)}
    assert {k: v for k, v in bad.items() if v} == {}


def _snapshot_name_handling(path):
    """Places in a file that parse or list snapshot names: regexes over 'epoch_' / 'iout_' and globs for 'epoch_*'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if node.func.attr in ('compile', 'match', 'fullmatch', 'search', 'findall') and \
                any('iout' in s or 'epoch_' in s for s in strings):
            found.append(f"{path.name}:{node.lineno} re.{node.func.attr}")
        if node.func.attr in ('glob', 'rglob', 'iglob') and any(s.split('/')[-1].startswith('epoch_') for s in strings):
            found.append(f"{path.name}:{node.lineno} {node.func.attr}")
    return found


def test_snapshot_names_are_parsed_and_listed_in_utils_snapshots_only():
    owner = ROOT / 'utils' / 'snapshots.py'
    assert _snapshot_name_handling(owner), "the owner itself must be found by this check"
    others = [f for p in sources('utils', 'net', 'tools', 'benchmarks', 'tests', top=True) if p != owner
              for f in _snapshot_name_handling(p)]
    assert others == []


def test_the_python_api_sits_on_top():
    """salt/ (the notebook API) may use net/ and utils/; nothing of the project imports it back."""
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imported(p) if m.split('.')[0] == 'salt')
           for p in sources('net', 'utils', 'tools', top=True)}
    assert {k: v for k, v in bad.items() if v} == {}
    assert not {m for m in imported(ROOT / 'salt' / '__init__.py') if m.split('.')[0] in ('tools', *SCRIPTS)}
