"""Architecture registry: output contract, gradients, and encoder weight loading (CPU, fast)."""
import os
import socket

import pytest
import torch
import torch.hub

from net.models import ARCHITECTURES, build_model
from net.models.pretrained import hub_checkpoint_path
from utils.errors import UserError

M, MAS = {'mask'}, {'mask', 'aux', 'salt'}
# the heads each architecture promises (losses are chosen against these)
EXPECTED_KEYS = {
    'unet_resnet34_v1': M, 'wide_resnet_v1': M, 'wide_resnet_v2': M, 'wide_resnet_se': M, 'seresnext': M,
    'wide_resnet_hypercolumn': MAS, 'ds_resnet_34': MAS, 'unet_lite_ds': MAS,
    'wide_resnet_border': {'mask', 'border'}, 'unet_lite': M, 'unet_lite_w32': M,
    'unet_lite_border': {'mask', 'border'}, 'unet_plain': M, 'unet_plain_w8': M, 'unet_plain_scse': M,
    'unet_plain_hyper': M, 'unet_plain_ds': MAS, 'unet_plain_ds_w32': MAS, 'unet_plain_ds_w8': MAS,
    'unet_plain_ds_scse': MAS, 'unet_plain_ds_scse_w8': MAS, 'unet_plain_ds_hyper': MAS, 'unet_plain_ds_hyper_w8': MAS,
    'unet_plain_ds_dil': MAS, 'unet_plain_ds_dil_w8': MAS,
}

@pytest.fixture(autouse=True)
def _threads():
    # One thread: when other jobs share the cores, two oneDNN threads stall on each other and a
    # test can run many times slower; one thread stays near its unloaded speed.
    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _check_outputs(model, out, n, size):
    assert isinstance(out, dict)
    assert set(out) == set(model.output_keys)
    assert out['mask'].shape == (n, 1, size, size)
    for key, value in out.items():
        maps = value if key == 'aux' else [value]
        if key == 'aux':
            assert isinstance(value, list) and len(value) >= 2
        for t in maps:
            assert t.dtype == torch.float32
            assert torch.isfinite(t).all(), key
            assert t.shape == ((n,) if key == 'salt' else (n, 1, size, size)), key


def _total(out):
    """A scalar touching every output, so every head receives gradient."""
    loss = 0
    for key, value in out.items():
        for t in (value if key == 'aux' else [value]):
            loss = loss + t.float().mean()
    return loss


def _train_step(model, n=2, size=128):
    model.train()
    out = model(torch.randn(n, 3, size, size))
    _check_outputs(model, out, n, size)
    _total(out).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    live = {name for name, g in grads.items() if g is not None and g.abs().sum() > 0}
    first = next(name for name, _ in model.named_parameters() if name.startswith('encoder.'))
    assert first in live, f'no gradient reached the first encoder layer {first}'
    assert any(name.startswith('blocks.') for name in live), 'no gradient reached the decoder'
    for key, head in (('aux', 'aux_heads.'), ('salt', 'salt_head.'), ('border', 'border_head.')):
        if key in model.output_keys:
            assert any(name.startswith(head) for name in live), f'no gradient reached the {key} head'


def test_registry_is_complete():
    assert set(ARCHITECTURES) == set(EXPECTED_KEYS)
    assert all(callable(b) for b in ARCHITECTURES.values())
    # predict*.py --empty_below names the architectures with a salt head in its error
    from net.inference import SALT_HEAD_ARCHS
    assert set(SALT_HEAD_ARCHS) == {name for name, keys in EXPECTED_KEYS.items() if 'salt' in keys}


# The WiderResNet-38 encoder (105M parameters) costs seconds per step on CPU and all wide
# variants share it: train the two with extra heads, run the other three forward only.
WIDE_EVAL_ONLY = ('wide_resnet_v1', 'wide_resnet_v2', 'wide_resnet_se')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n.startswith('wide_resnet') else n
                                  for n in sorted(set(ARCHITECTURES) - set(WIDE_EVAL_ONLY))])
def test_train_step(name):
    model = build_model(name, pretrained=None)
    assert isinstance(model.output_keys, frozenset) and model.output_keys == EXPECTED_KEYS[name]
    _train_step(model)


@pytest.mark.slow
@pytest.mark.parametrize('name', WIDE_EVAL_ONLY)
def test_forward_only(name):
    model = build_model(name, pretrained=None).eval()
    assert model.output_keys == EXPECTED_KEYS[name]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    _check_outputs(model, out, 2, 128)


def test_256_input():
    model = build_model('unet_lite').eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 256))
    _check_outputs(model, out, 1, 256)


@pytest.mark.parametrize('name', ['unet_lite_ds', 'ds_resnet_34'])
def test_autocast_channels_last(name):
    model = build_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)  # the smallest size both nets take
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    _check_outputs(model, out, 2, 64)
    _total(out).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unknown_name():
    with pytest.raises(UserError) as e:
        build_model('nope')
    assert 'nope' in str(e.value) and 'unet_lite' in str(e.value) and 'wide_resnet_v1' in str(e.value)


def test_none_string_is_random_init():
    assert build_model('unet_lite', pretrained='none').output_keys == {'mask'}


# ---- pretrained=PATH -------------------------------------------------------------------------

def _perturbed_encoder_state(name):
    state = build_model(name).encoder.state_dict()
    return {k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}


@pytest.mark.parametrize('name', ['unet_resnet34_v1', 'unet_lite'])
def test_load_encoder_file(tmp_path, name):
    state = _perturbed_encoder_state(name)
    path = tmp_path / 'enc.pth'
    torch.save(state, path)
    model = build_model(name, pretrained=str(path))
    loaded = model.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_load_encoder_file_nested_checkpoint(tmp_path):
    # a whole-model checkpoint of this package, wrapped as trainers usually save it
    model = build_model('unet_lite')
    with torch.no_grad():
        model.encoder.stem[0].weight.add_(1.0)
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': model.state_dict(), 'epoch': 3}, path)
    again = build_model('unet_lite', pretrained=path)
    assert torch.equal(again.encoder.stem[0].weight, model.encoder.stem[0].weight)


def test_load_classifier_checkpoint_layout(tmp_path):
    # ImageNet checkpoints often carry a DataParallel prefix and a classifier; both are dropped
    state = _perturbed_encoder_state('unet_lite')
    ckpt = {f'module.{k}': v for k, v in state.items()}
    ckpt.update({'module.fc.weight': torch.zeros(10, 256), 'module.fc.bias': torch.zeros(10)})
    path = tmp_path / 'classifier.pth'
    torch.save(ckpt, path)
    loaded = build_model('unet_lite', pretrained=str(path)).encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def _one_line_user_error(name, pretrained, *needles):
    with pytest.raises(UserError) as e:
        build_model(name, pretrained=pretrained)
    msg = str(e.value)
    assert '\n' not in msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_file_of_another_architecture(tmp_path):
    path = tmp_path / 'resnet34_encoder.pth'
    torch.save(build_model('unet_resnet34_v1').encoder.state_dict(), path)
    _one_line_user_error('unet_lite', str(path), str(path), 'unet_lite', 'missing')


def test_file_with_wrong_shapes(tmp_path):
    path = tmp_path / 'w32.pth'
    torch.save(build_model('unet_lite_w32').encoder.state_dict(), path)
    _one_line_user_error('unet_lite', str(path), str(path), 'shape')


def test_missing_file(tmp_path):
    path = tmp_path / 'nowhere.pth'
    _one_line_user_error('unet_lite', str(path), str(path), 'does not exist')


def test_corrupt_file(tmp_path):
    path = tmp_path / 'junk.pth'
    path.write_bytes(os.urandom(4096))
    _one_line_user_error('unet_lite', str(path), str(path))


def test_file_without_state_dict(tmp_path):
    path = tmp_path / 'list.pth'
    torch.save([1, 2, 3], path)
    _one_line_user_error('unet_lite', str(path), str(path))


# ---- pretrained='imagenet' --------------------------------------------------------------------

@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Empty torch.hub cache and a download that fails at once, as on a machine without internet."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise OSError('network is unreachable')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    return calls


def _warning_lines(err):
    return [line for line in err.splitlines() if line.strip()]


def test_imagenet_offline_warns_and_continues(offline_hub, capsys):
    model = build_model('unet_resnet34_v1', pretrained='imagenet')
    assert model.output_keys == {'mask'}
    assert offline_hub, 'the download should have been attempted'
    lines = _warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and 'could not be loaded' in lines[0] and 'random init' in lines[0]
    assert socket.getdefaulttimeout() is None, 'the download timeout must not leak into the process'


def test_imagenet_from_hub_cache(offline_hub, capsys):
    from torchvision.models import ResNet34_Weights
    state = _perturbed_encoder_state('unet_resnet34_v1')
    ckpt = dict(state, **{'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)})
    path = hub_checkpoint_path(ResNet34_Weights.IMAGENET1K_V1)
    assert path.startswith(str(os.environ['TORCH_HOME']))
    os.makedirs(os.path.dirname(path))
    torch.save(ckpt, path)
    model = build_model('ds_resnet_34', pretrained='imagenet')
    assert not offline_hub, 'a cached file must not be downloaded again'
    assert capsys.readouterr().err == ''
    loaded = model.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize('name', ['seresnext', 'unet_lite'])
def test_imagenet_unavailable_for_own_encoders(offline_hub, capsys, name):
    model = build_model(name, pretrained='imagenet')
    assert 'mask' in model.output_keys
    lines = _warning_lines(capsys.readouterr().err)
    assert len(lines) == 1 and 'local' in lines[0]
    assert not offline_hub


def test_pretrained_auto_is_quiet_without_weights_and_loads_them_when_cached(offline_hub, capsys):
    """--pretrained auto (the default): offline, no warning and random init; with a cached file, its weights."""
    from torchvision.models import ResNet34_Weights
    torch.manual_seed(0)
    model = build_model('unet_resnet34_v1', pretrained='auto')
    assert offline_hub, 'the download should have been attempted'
    assert capsys.readouterr().err == ''
    assert socket.getdefaulttimeout() is None
    for name in ('unet_lite', 'seresnext'):  # encoders without torchvision weights: nothing to say either
        build_model(name, pretrained='auto')
        assert capsys.readouterr().err == ''
    state = _perturbed_encoder_state('unet_resnet34_v1')
    path = hub_checkpoint_path(ResNet34_Weights.IMAGENET1K_V1)
    os.makedirs(os.path.dirname(path), exist_ok=True)  # the failed download made the folder
    torch.save(state, path)
    loaded = build_model('unet_resnet34_v1', pretrained='auto').encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not any(torch.equal(model.encoder.state_dict()[k], v) for k, v in state.items() if v.dim() > 1)


def test_train_defaults_to_pretrained_auto():
    from train import parse_args
    assert parse_args(['--experiment_dir', 'x']).pretrained == 'auto'


def test_every_output_contract_is_trained_by_test_pipeline():
    """test_pipeline.py trains one architecture per contract through train.py / train_border.py: all of them."""
    from test_pipeline import TRAINED_CONTRACTS
    assert {frozenset(keys) for keys in EXPECTED_KEYS.values()} == set(TRAINED_CONTRACTS)
    for keys, (arch, script, _) in TRAINED_CONTRACTS.items():
        assert EXPECTED_KEYS[arch] == keys
        assert script == ('train_border.py' if 'border' in keys else 'train.py')
