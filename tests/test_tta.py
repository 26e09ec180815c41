import pytest
import torch

from net import tta
from utils.errors import UserError


def _average(model, x, pairs):
    return torch.stack([inv(model(fwd(x))) for fwd, inv in pairs]).mean(0)


def test_required_names_exist():
    assert {'null', 'null_hflip', 'hflip_vshift'} <= set(tta.TTAS)
    assert len(tta.build_tta('null')) == 1
    assert len(tta.build_tta('null_hflip')) == 2


@pytest.mark.parametrize('name', sorted(tta.TTAS))
@pytest.mark.parametrize('side', [101, 128, 256])
def test_every_pair_is_exactly_invertible(name, side):
    x = torch.randn(2, 3, side, side)
    for fwd, inv in tta.build_tta(name):
        y = fwd(x)
        assert y.shape == x.shape
        assert torch.equal(inv(y), x)


def test_non_identity_pairs_change_the_input():
    x = torch.randn(1, 1, 128, 128)
    for name, pairs in tta.TTAS.items():
        for fwd, _ in pairs[1:]:
            assert not torch.equal(fwd(x), x), name


def test_vshift_moves_rows_by_a_sixteenth():
    x = torch.arange(128.).view(1, 1, 128, 1).expand(1, 1, 128, 128)
    fwd, _ = tta.build_tta('hflip_vshift')[2]
    assert torch.equal(fwd(x)[0, 0, 8], x[0, 0, 0])


def _flip_equivariant_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 5, padding=2, padding_mode='reflect')
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    return conv


def test_hflip_tta_on_flip_equivariant_model_changes_nothing():
    model = _flip_equivariant_model()
    x = torch.randn(3, 1, 128, 128)
    with torch.no_grad():
        plain = _average(model, x, tta.build_tta('null'))
        flipped = _average(model, x, tta.build_tta('null_hflip'))
    torch.testing.assert_close(flipped, plain, rtol=0, atol=1e-5)


def test_shift_tta_on_shift_equivariant_model_changes_nothing():
    # A circular conv commutes with torch.roll, so shift TTA must reproduce the plain prediction.
    model = _flip_equivariant_model()
    model.padding_mode = 'circular'
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        plain = _average(model, x, tta.build_tta('null'))
        for name in ('hflip_vshift', 'hflip_hvshift'):
            torch.testing.assert_close(_average(model, x, tta.build_tta(name)), plain, rtol=0, atol=1e-5)


def test_unknown_tta_raises_user_error():
    with pytest.raises(UserError, match='choose one of'):
        tta.build_tta('d4')
