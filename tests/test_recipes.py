"""Recipe files (recipes/*.toml, utils/recipes.py): the presets load, stage 3 builds on stage 2, the options
become train.py's command line, and a hand-edited file that is wrong is one line naming the file and key."""
import shutil

import pytest

from conftest import ROOT, run_main
from net.training import build_parser, parse_args as train_parse_args
from utils.errors import UserError
from utils.recipes import as_argv, load_recipe, preset_names, preset_path

ACTIONS = build_parser().actions()


def test_presets_are_the_files_of_recipes():
    assert preset_names() == ['cpu', 'gpu', 'smoke']
    for name in preset_names():
        r = load_recipe(preset_path(name), ACTIONS)
        assert r.name == name and r.folds == '0-4' and r.description
        assert all(m > 0 for m in r.minutes)
        # every stage's options pass train.py's own parser
        for stage in ('stage1', 'stage2', 'stage3'):
            ns = train_parse_args([*as_argv(r.options(stage)), '--experiment_dir', 'x'])
            assert ns.arch == 'unet_plain_ds' and ns.schedule_by == 'time' and ns.train_augs == 'train_112_v3'


def test_cpu_and_gpu_presets_hold_the_recipe():
    cpu, gpu = (load_recipe(preset_path(n), ACTIONS) for n in ('cpu', 'gpu'))
    assert cpu.minutes == (20.0, 10.0, 10.0) and gpu.minutes == (1.2, 0.5, 0.5)
    assert (cpu.train['batch_size'], gpu.train['batch_size']) == (16, 32)
    for r in (cpu, gpu):
        assert r.options('stage1')['loss'] == 'combined_bce' and r.options('stage1')['optimizer'] == 'adam_1e-3'
        assert r.options('stage2')['loss'] == 'combined_sym'
        assert (r.options('stage2')['opt'], r.options('stage2')['lr']) == ('adam', 3e-4)
        assert r.options('stage3') == r.options('stage2')  # stage 3 fine-tunes as stage 2 does
    assert load_recipe(preset_path('smoke'), ACTIONS).train['limit'] == 32


def test_stage_options_win_and_flags_become_bare(tmp_path):
    f = tmp_path / 'mine.toml'
    f.write_text('folds = "1"\n[train]\nloss = "BCE"\nbatch_size = 4\ntensorboard = true\nswa = 0.0\n'
                 '[stage1]\nminutes = 2\nloss = "combined_bce"\n[stage2]\nminutes = 1.5\ntensorboard = false\n'
                 '[stage3]\nminutes = 0.5\nseed = 7\n')
    r = load_recipe(f, ACTIONS)
    assert r.name == 'mine' and r.folds == '1' and r.minutes == (2.0, 1.5, 0.5)
    assert as_argv(r.options('stage1')) == ['--loss', 'combined_bce', '--batch_size', '4', '--tensorboard',
                                            '--swa', '0.0']
    assert as_argv(r.options('stage2')) == ['--loss', 'BCE', '--batch_size', '4', '--swa', '0.0']
    assert r.options('stage3')['seed'] == 7 and r.options('stage3')['tensorboard'] is False


def test_train_py_takes_a_recipe_stage_and_its_command_line_wins(tmp_path, capsys):
    cpu = load_recipe(preset_path('cpu'), ACTIONS)
    for stage, minutes in (('stage1', 20.0), ('stage2', 10.0), ('stage3', 10.0)):
        c = train_parse_args(['--recipe', str(preset_path('cpu')), '--stage', stage, '--experiment_dir', 'x'])
        want = train_parse_args([*as_argv(cpu.options(stage)), '--max_minutes', str(minutes), '--experiment_dir', 'x'])
        assert c == want and c.max_minutes == minutes
        assert c.given == want.given  # the recipe's options count as given (a --resume compares them)
    c = train_parse_args(['--recipe', str(preset_path('cpu')), '--stage', 'stage2', '--experiment_dir', 'x',
                          '--input', 'pad128', '--max_minutes', '3', '--arch', 'unet_plain_ds_w8'])
    assert (c.train_augs, c.max_minutes, c.arch, c.loss) == ('train_128_v3', 3.0, 'unet_plain_ds_w8', 'combined_sym')
    f = tmp_path / 'mine.toml'
    f.write_text('[train]\ntensorboard = true\n[stage1]\nminutes = 2\nopt = "sgd"\n[stage2]\nminutes = 1\n'
                 'tensorboard = false\n')
    one = train_parse_args(['--recipe', str(f), '--experiment_dir', 'x'])  # --stage defaults to stage1
    assert one.tensorboard and one.optimizer == 'sgd_1e-2' and one.max_minutes == 2.0
    assert not train_parse_args(['--recipe', str(f), '--stage', 'stage2', '--experiment_dir', 'x']).tensorboard
    f.write_text('[stage1]\nminutes = 2\nloss = "nope"\n[stage2]\nminutes = 1\n')
    for argv, words in ((['--recipe', str(f)], [str(f), '[stage1] loss', 'nope']),
                        (['--stage', 'stage2'], ['--stage', '--recipe FILE'])):
        with pytest.raises(SystemExit) as e:
            train_parse_args([*argv, '--experiment_dir', 'x'])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err


def test_stage3_minutes_default_to_stage2s(tmp_path):
    f = tmp_path / 'r.toml'
    f.write_text('[stage1]\nminutes = 3\n[stage2]\nminutes = 2\n')
    assert load_recipe(f, ACTIONS).minutes == (3.0, 2.0, 2.0)


BAD = {
    'not toml': ('[stage1\nminutes = 1', ['not valid TOML']),
    'unknown top key': ('colour = "red"\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1', ['colour', 'not a recipe key']),
    'not an option': ('[train]\nlearning_rate = 0.1\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1',
                      ['[train] learning_rate', 'not a train.py option']),
    'flag given a value': ('[train]\ntensorboard = "yes"\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1',
                           ['[train] tensorboard', 'true or false']),
    'value given a bool': ('[stage1]\nminutes = 1\nloss = true\n[stage2]\nminutes = 1', ['[stage1] loss', 'needs a value']),
    'owned option': ('[train]\nfold = 3\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1', ['[train] fold', 'set by recipe.py']),
    'stage minutes in train': ('[train]\nminutes = 3\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1',
                               ['[train] minutes', "stage's table"]),
    'no stage 2': ('[stage1]\nminutes = 1', ['[stage2]', 'missing']),
    'minutes not positive': ('[stage1]\nminutes = 0\n[stage2]\nminutes = 1', ['[stage1] minutes', 'positive']),
    'minutes a string': ('[stage1]\nminutes = "ten"\n[stage2]\nminutes = 1', ['[stage1] minutes', 'positive']),
    'folds a number': ('folds = 3\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1', ['folds', 'must be a str']),
    'unknown choice': ('[stage1]\nminutes = 1\narch = "unet_nope"\n[stage2]\nminutes = 1',
                       ['[stage1] arch', 'unet_plain_ds']),
    'number that is not': ('[train]\nbatch_size = "four"\n[stage1]\nminutes = 1\n[stage2]\nminutes = 1',
                           ['[train] batch_size', "'four'"]),
    'stage not a table': ('stage1 = 3\n[stage2]\nminutes = 1', ['stage1', 'must be a table']),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_a_wrong_recipe_is_one_line_naming_file_and_key(case, tmp_path):
    text, phrases = BAD[case]
    f = tmp_path / 'bad.toml'
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_recipe(f, ACTIONS)
    msg = str(e.value)
    assert '\n' not in msg and str(f) in msg
    for phrase in phrases:
        assert phrase in msg, msg


def test_recipe_py_refuses_a_bad_recipe_before_any_work(tmp_path):
    data = tmp_path / 'data'
    data.mkdir()
    mine = tmp_path / 'mine.toml'
    shutil.copy(ROOT / 'recipes' / 'cpu.toml', mine)
    text = mine.read_text()
    assert 'loss = "combined_sym"' in text
    mine.write_text(text.replace('loss = "combined_sym"', 'loss = "no_such_loss"'))
    r = run_main(['recipe.py', '--recipe', mine, '--data_dir', data, '--experiment_dir', tmp_path / 'e' / 'r'],
                 check=False)
    assert r.returncode == 2 and 'no_such_loss' in r.stderr and 'Traceback' not in r.stderr
    assert list(data.iterdir()) == [] and not (tmp_path / 'e').exists()
    r = run_main(['recipe.py', '--recipe', tmp_path / 'none.toml', '--data_dir', data], check=False)
    assert r.returncode == 2 and 'does not exist' in r.stderr
    r = run_main(['recipe.py', '--recipe', mine, '--preset', 'cpu', '--data_dir', data], check=False)
    assert r.returncode == 2 and 'not allowed with' in r.stderr
