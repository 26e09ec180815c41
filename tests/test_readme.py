"""The README stays a five-minute read, and every command line it shows parses with its script's own parser."""
import importlib
import importlib.util
import shlex

import pytest

from conftest import ROOT

README = ROOT / 'README.md'


def readme_commands():
    """The `python3 SCRIPT ...` lines of the README's code blocks, continuation lines joined, comments cut."""
    lines = README.read_text(encoding='utf-8').splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith('    python3 '):
            cmd = line.strip()
            while cmd.endswith('\\'):
                i += 1
                cmd = cmd[:-1] + ' ' + lines[i].strip()
            out.append(shlex.split(cmd, comments=True)[1:])
        i += 1
    return out


def script_module(script):
    if '/' in script:  # utils/stack_and_save.py, tools/evaluate.py: modules of a package
        return importlib.import_module(script[:-3].replace('/', '.'))
    spec = importlib.util.spec_from_file_location(f"readme_{script[:-3]}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_at_most_200_lines():
    assert len(README.read_text(encoding='utf-8').splitlines()) <= 200


def test_readme_commands_parse(capsys):
    commands = readme_commands()
    scripts = {c[0] for c in commands}
    # the whole pipeline is shown: stacking, folds, training, recipes, threshold, every predict script
    assert {'utils/stack_and_save.py', 'utils/make_folds.py', 'train.py', 'train_folds.py', 'recipe.py',
            'optimize_threshold.py', 'predict.py', 'predict_tta.py', 'predict_se.py', 'predict_fold_avg.py'} <= scripts
    for script, *argv in commands:
        module = script_module(script)
        try:
            module.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"README: python3 {script} {' '.join(argv)} does not parse ({e.code}): "
                        f"{capsys.readouterr().err.strip()}")
