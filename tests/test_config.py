"""TrainConfig (net/config.py) and the parser made from it: one field is one option, with its group,
default, help and range; the plain-name aliases (--input, --opt, --sched) set the same fields."""
import dataclasses

import pytest

from net.config import RESUME_MAY_CHANGE, TrainConfig
from net.training import TRAIN_RANGES, build_config, build_parser, parse_args


def test_every_option_field_is_an_option_with_its_default_and_help():
    p = build_parser()
    actions = p.actions()
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata['cli']:
            continue
        a = actions[f.name]
        assert a.dest == f.name and a.help == f.metadata['help'], f.name
        assert a.default == f.default, f.name
    help_text = p.format_help()
    for group in ('data:', 'model:', 'input geometry:', 'loss:', 'optimizer:', 'schedule:', 'run:', 'device:'):
        assert f'\n{group}\n' in help_text, group


def test_ranges_come_from_the_fields_and_are_checked_at_parse_time(capsys):
    assert TRAIN_RANGES['swa'] == (0, 1) and TRAIN_RANGES['threads'] == (0, 4096) and 'arch' not in TRAIN_RANGES
    with pytest.raises(SystemExit):
        parse_args(['--experiment_dir', 'x', '--fold', '-2'])
    assert '--fold must be between 0' in capsys.readouterr().err


def test_saved_fields_are_train_config_json():
    saved = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata['saved']}
    config = build_config(parse_args(['--experiment_dir', 'x']), quiet=True).record()
    assert set(config) == saved | {'input'} and 'command' in saved
    assert RESUME_MAY_CHANGE <= saved
    # and back: a saved config, older keys missing, is a TrainConfig with their defaults
    back = TrainConfig.from_saved({k: v for k, v in config.items() if k != 'loss_region'})
    assert back.loss_region == 'full' and back.arch == config['arch'] and back.n_epochs == 200


@pytest.mark.parametrize('argv, field, value', [
    (['--opt', 'adam'], 'optimizer', 'adam_1e-3'),
    (['--opt', 'sgd', '--lr', '0.05'], 'optimizer', 'sgd_1e-2'),
    (['--optimizer', 'adam_1e-5', '--opt', 'adam'], 'optimizer', 'adam_1e-3'),  # the later one wins
    (['--opt', 'adam', '--optimizer', 'adam_1e-5'], 'optimizer', 'adam_1e-5'),
    (['--sched', 'cosine'], 'scheduler', 'cosine'),
    (['--input', 'resize202_pad256'], 'train_augs', 'train_256_v1'),
])
def test_plain_names_set_the_same_fields(argv, field, value):
    c = parse_args([*argv, '--experiment_dir', 'x'])
    assert getattr(c, field) == value and field in c.given
    if '--lr' in argv:
        assert c.lr == 0.05


@pytest.mark.parametrize('argv, phrase', [(['--opt', 'adamw'], "unknown optimizer 'adamw'"),
                                          (['--sched', 'linear'], 'cosine')])
def test_unknown_plain_names_are_one_line(argv, phrase, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args([*argv, '--experiment_dir', 'x'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and phrase in err and len(err.strip().splitlines()) == 1


def test_predict_scripts_take_their_fields_of_predict_config(capsys):
    import predict
    import predict_se
    import predict_tta
    from net.config import PredictConfig
    c = predict.parse_args(['--snapshot', 's', '--th', 'auto', '--min_size', '12'])
    assert isinstance(c, PredictConfig) and c.tta == 'null' and (c.th, c.min_size) == ('auto', 12)
    assert predict_tta.parse_args(['--snapshot', 's']).tta == 'null_hflip'
    se = predict_se.parse_args(['--snapshot_dir', 'd', '--cycles', '2', '--tta', 'null'])
    assert (se.snapshot_dir, se.cycles, se.tta) == ('d', 2, 'null')
    with pytest.raises(dataclasses.FrozenInstanceError):
        se.th = 0.3
    for script, argv, phrase in ((predict, ['--snapshot', 's', '--tta', 'null'], 'unrecognized arguments: --tta'),
                                 (predict_se, ['--cycles', '1'], '--snapshot_dir'),
                                 (predict_tta, ['--snapshot', 's', '--batch_size', '0'], '--batch_size'),
                                 (predict_tta, ['--snapshot', 's', '--arch', 'nope'], 'unet_plain_ds')):
        with pytest.raises(SystemExit):
            script.parse_args(argv)
        assert phrase in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_se.parse_args(['--help'])
    assert 'snapshot_ensemble.best.json' in capsys.readouterr().out  # its own wording of --th auto
