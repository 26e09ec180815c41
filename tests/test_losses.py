"""Tests for net.losses: registry contract, perfect/bad predictions, smp agreement, autocast."""
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from net import losses
from utils.errors import UserError

EXPECTED_REQUIRES = {
    'BCE': {'mask'},
    'lovasz': {'mask'},
    'focal': {'mask'},
    'bce_lovasz': {'mask'},
    'BCEJaccard': {'mask'},
    'BCEDice': {'mask'},
    'boundary_bce': {'mask', 'border'},
    'boundary_lovasz': {'mask', 'border'},
    'combined': {'mask', 'aux', 'salt'},
    'combined_hyper': {'mask', 'aux', 'salt'},
    'combined_bce': {'mask', 'aux', 'salt'},
    'combined_sym': {'mask', 'aux', 'salt'},
    'combined_bce_sym': {'mask', 'aux', 'salt'},
    'combined_bce_salt': {'mask', 'aux', 'salt'},
    'combined_salt': {'mask', 'aux', 'salt'},
    'combined_sym_salt': {'mask', 'aux', 'salt'},
    'lovasz_symmetric': {'mask'},
    'BCE_lovasz_symmetric': {'mask'},
}
N_AUX = 3


def _masks(n=6, size=24, seed=0):
    """(n,1,size,size) masks: empty, full, a square, then random blobs."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 1, size, size)
    m[1] = 1
    m[2, :, 4:14, 6:20] = 1
    if n > 3:
        noise = torch.rand(n - 3, 1, size // 4, size // 4, generator=g)
        blobs = F.interpolate(noise, size=(size, size), mode='bilinear', align_corners=False)
        m[3:] = (blobs > 0.5).float()
    return m


def _border(mask):
    # Morphological gradient: a 1-pixel band on both sides of the salt edge.
    dil = F.max_pool2d(mask, 3, 1, 1)
    ero = -F.max_pool2d(-mask, 3, 1, 1)
    return dil - ero


def _targets(mask):
    return {'mask': mask, 'border': _border(mask)}


def _perfect(t):
    return 20.0 * (2.0 * t - 1.0)


def _outputs(mask, border, salt_logits, keys, mask_logits=None, aux=None):
    out = {'mask': _perfect(mask) if mask_logits is None else mask_logits,
           'aux': [_perfect(mask) for _ in range(N_AUX)] if aux is None else aux,
           'salt': salt_logits,
           'border': _perfect(border)}
    return {k: out[k] for k in keys}


def _perfect_outputs(targets, keys):
    salt = _perfect(losses.salt_target(targets['mask']))
    return _outputs(targets['mask'], targets['border'], salt, keys)


def _bad_outputs(targets, keys):
    # Confidently wrong everywhere: inverted mask, aux, salt and border.
    out = _perfect_outputs(targets, keys)
    return {k: [-a for a in v] if k == 'aux' else -v for k, v in out.items()}


def test_registry_names_and_requires():
    assert set(losses.LOSSES) == set(EXPECTED_REQUIRES)
    for name, keys in EXPECTED_REQUIRES.items():
        loss = losses.build_loss(name)
        assert isinstance(loss, torch.nn.Module)
        assert isinstance(loss.requires, frozenset)
        assert loss.requires == keys, name
        assert 'mask' in loss.target_keys
        assert ('border' in loss.target_keys) == ('border' in keys)


@pytest.mark.parametrize('name', sorted(EXPECTED_REQUIRES))
def test_perfect_bad_and_gradients(name):
    loss_fn = losses.build_loss(name)
    targets = _targets(_masks())
    keys = loss_fn.requires

    perfect = loss_fn(_perfect_outputs(targets, keys), targets)
    assert perfect.dtype == torch.float32 and perfect.dim() == 0
    assert 0 <= perfect.item() < 1e-3, (name, perfect.item())

    bad = loss_fn(_bad_outputs(targets, keys), targets)
    assert bad.item() > 0.5, (name, bad.item())

    # Random logits: every required output gets a finite, non-zero gradient.
    g = torch.Generator().manual_seed(1)
    out = {k: [torch.randn(targets['mask'].shape, generator=g) for _ in range(N_AUX)] if k == 'aux'
           else torch.randn(targets['mask'].shape[0] if k == 'salt' else targets['mask'].shape, generator=g)
           for k in keys}
    leaves = [t for v in out.values() for t in (v if isinstance(v, list) else [v])]
    for t in leaves:
        t.requires_grad_(True)
    value = loss_fn(out, targets)
    value.backward()
    assert torch.isfinite(value)
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_empty_batch_perfect_and_grad():
    # All-empty batch: the overlap losses switch off, lovasz falls back to the largest error.
    mask = torch.zeros(3, 1, 16, 16)
    targets = _targets(mask)
    for name in EXPECTED_REQUIRES:
        loss_fn = losses.build_loss(name)
        out = _perfect_outputs(targets, loss_fn.requires)
        assert loss_fn(out, targets).item() < 1e-3, name
        logits = torch.randn(mask.shape, requires_grad=True)
        out['mask'] = logits
        loss_fn(out, targets).backward()
        assert torch.isfinite(logits.grad).all(), name


def _random_case(seed, n=6, size=20):
    g = torch.Generator().manual_seed(seed)
    mask = _masks(n, size, seed)
    logits = 3.0 * torch.randn(mask.shape, generator=g)
    return logits, mask


@pytest.mark.parametrize('seed', range(4))
def test_lovasz_matches_smp(seed):
    logits, mask = _random_case(seed)
    ref_fn = smp.losses.LovaszLoss(mode='binary', per_image=True, from_logits=True)

    x_ref = logits.clone().requires_grad_(True)
    ref = ref_fn(x_ref, mask)
    ref.backward()
    x = logits.clone().requires_grad_(True)
    ours = losses.build_loss('lovasz')({'mask': x}, {'mask': mask})
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-8)

    # Per-image values too, including the empty (0) and full (1) images.
    per = losses.lovasz_hinge_per_image(logits, mask)
    for i in range(mask.shape[0]):
        one = smp.losses.LovaszLoss(mode='binary', per_image=True)(logits[i:i + 1], mask[i:i + 1])
        torch.testing.assert_close(per[i], one, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('seed', range(3))
def test_lovasz_symmetric_matches_smp(seed):
    logits, mask = _random_case(seed)
    ref_fn = smp.losses.LovaszLoss(mode='binary', per_image=True)
    ref = 0.5 * (ref_fn(logits, mask) + ref_fn(-logits, 1 - mask))
    ours = losses.build_loss('lovasz_symmetric')({'mask': logits}, {'mask': mask})
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('smooth', [0.0, 1.0])
def test_dice_and_jaccard_match_smp(seed, smooth):
    logits, mask = _random_case(seed)
    for ours_fn, ref_cls in [(losses.soft_dice_loss, smp.losses.DiceLoss),
                             (losses.soft_jaccard_loss, smp.losses.JaccardLoss)]:
        ref_fn = ref_cls(mode='binary', from_logits=True, smooth=smooth)
        x_ref = logits.clone().requires_grad_(True)
        ref = ref_fn(x_ref, mask)
        ref.backward()
        x = logits.clone().requires_grad_(True)
        ours = ours_fn(x, mask, smooth=smooth)
        ours.backward()
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
        # The gradients are ~1e-4; smp goes through exp(logsigmoid), so allow fp32 rounding.
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-7)
        # An all-empty batch scores 0 in both.
        empty = torch.zeros_like(mask)
        assert ours_fn(logits, empty, smooth=smooth).item() == ref_fn(logits, empty).item() == 0.0


def test_registry_dice_jaccard_use_smp_defaults():
    logits, mask = _random_case(7)
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    for name, ref_cls in [('BCEDice', smp.losses.DiceLoss), ('BCEJaccard', smp.losses.JaccardLoss)]:
        ref = bce + ref_cls(mode='binary', from_logits=True)(logits, mask)
        ours = losses.build_loss(name)({'mask': logits}, {'mask': mask})
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('kwargs', [{}, {'alpha': 0.25}, {'gamma': 1.5}])
def test_focal_matches_smp(seed, kwargs):
    logits, mask = _random_case(seed)
    ref = smp.losses.FocalLoss(mode='binary', **kwargs)(logits, mask)
    ours = losses.focal_with_logits(logits, mask, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)
    if not kwargs:
        reg = losses.build_loss('focal')({'mask': logits}, {'mask': mask})
        torch.testing.assert_close(reg, ref, rtol=1e-5, atol=1e-8)


def test_bce_matches_torch():
    logits, mask = _random_case(3)
    ours = losses.build_loss('BCE')({'mask': logits}, {'mask': mask})
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(logits, mask))


@pytest.mark.parametrize('name', sorted(EXPECTED_REQUIRES))
def test_bf16_autocast_gives_fp32(name):
    loss_fn = losses.build_loss(name)
    targets = _targets(_masks())
    g = torch.Generator().manual_seed(5)
    shape = targets['mask'].shape
    out32 = {'mask': 2 * torch.randn(shape, generator=g),
             'aux': [2 * torch.randn(shape, generator=g) for _ in range(N_AUX)],
             'salt': torch.randn(shape[0], generator=g),
             'border': 2 * torch.randn(shape, generator=g)}
    out32 = {k: out32[k] for k in loss_fn.requires}
    out16 = {k: [a.bfloat16() for a in v] if k == 'aux' else v.bfloat16() for k, v in out32.items()}
    ref = loss_fn(out32, targets)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = loss_fn(out16, targets)
    assert low.dtype == torch.float32
    # bf16 keeps ~3 significant digits of the logits; the loss itself is summed in fp32.
    torch.testing.assert_close(low, ref, rtol=2e-2, atol=1e-3)


def test_combined_ignores_aux_on_empty_images():
    targets = _targets(_masks())
    mask = targets['mask']
    has = losses.salt_target(mask)
    assert has[0] == 0 and has[1:].all()
    perfect = _perfect_outputs(targets, {'mask', 'aux', 'salt'})
    # Aux heads confidently wrong, but only on the empty image.
    wrong_on_empty = [a.clone() for a in perfect['aux']]
    for a in wrong_on_empty:
        a[0] = 20.0
    for name in ('combined', 'combined_hyper'):
        loss_fn = losses.build_loss(name)
        value = loss_fn({**perfect, 'aux': wrong_on_empty}, targets)
        assert value.item() < 1e-3, name
        # Wrong on a salt image instead: the aux term counts, with the per-head weight.
        wrong = [a.clone() for a in perfect['aux']]
        wrong[0][2] = -wrong[0][2]
        value = loss_fn({**perfect, 'aux': wrong}, targets)
        expected = loss_fn.aux_weight * losses.lovasz_hinge_per_image(wrong[0][2:3], mask[2:3]).sum() / has.sum()
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def test_combined_weights_and_parts():
    ds = losses.build_loss('combined')
    assert (ds.mask_lovasz_weight, ds.mask_bce_weight, ds.salt_weight, ds.aux_weight) == (1.0, 0.0, 0.05, 0.1)
    hyper = losses.build_loss('combined_hyper')
    assert hyper.mask_bce_weight > 0 and hyper.aux_weight > ds.aux_weight
    targets = _targets(_masks())
    g = torch.Generator().manual_seed(2)
    shape = targets['mask'].shape
    out = {'mask': torch.randn(shape, generator=g),
           'aux': [torch.randn(shape, generator=g) for _ in range(N_AUX)],
           'salt': torch.randn(shape[0], generator=g)}
    total = hyper(out, targets)
    p = hyper.parts
    recomposed = (p['mask_lovasz'] + 0.5 * p['mask_bce'] + 0.05 * p['salt'] + 0.25 * p['aux'])
    torch.testing.assert_close(total, recomposed)
    torch.testing.assert_close(p['mask_lovasz'], losses.lovasz_hinge(out['mask'], targets['mask']))
    # combined_bce: BCE on the mask and on every aux head, no lovasz term computed at all
    bce = losses.build_loss('combined_bce')
    total = bce(out, targets)
    assert 'mask_lovasz' not in bce.parts
    has = losses.salt_target(targets['mask'])
    aux = sum((losses.bce_per_image(a, targets['mask']) * has).sum() / has.sum() for a in out['aux'])
    torch.testing.assert_close(bce.parts['aux'], aux)
    torch.testing.assert_close(total, losses.bce_with_logits(out['mask'], targets['mask']) + 0.05 * bce.parts['salt']
                               + 0.1 * aux)
    # No salt image in the batch: the aux heads contribute nothing.
    empty = _targets(torch.zeros(shape))
    ds(out, empty)
    assert ds.parts['aux'].item() == 0.0


def test_weighted_sum_helper():
    logits, mask = _random_case(4)
    loss_fn = losses.weighted_sum({'bce': 0.5, 'lovasz': 2.0})()
    value = loss_fn({'mask': logits}, {'mask': mask})
    expected = 0.5 * F.binary_cross_entropy_with_logits(logits, mask) + 2.0 * losses.lovasz_hinge(logits, mask)
    torch.testing.assert_close(value, expected)
    assert loss_fn.requires == {'mask'}
    assert losses.weighted_sum({'combined': 1.0, 'border_bce': 0.3})().requires == {'mask', 'aux', 'salt', 'border'}
    with pytest.raises(UserError, match='lovasz'):
        losses.weighted_sum({'nope': 1.0})


def test_weighted_sum_parts_include_the_parts_of_its_parts():
    logits, mask = _random_case(5)
    single = losses.build_loss('BCE')
    single({'mask': logits}, {'mask': mask})
    assert single.parts == {}  # one term: the loss itself
    nested = losses.weighted_sum({'bce_lovasz': 1.0, 'dice': 0.5})()
    total = nested({'mask': logits}, {'mask': mask})
    p = nested.parts
    assert set(p) == {'bce_lovasz', 'bce_lovasz.bce', 'bce_lovasz.lovasz', 'dice'}
    assert not any(v.requires_grad for v in p.values())
    torch.testing.assert_close(p['bce_lovasz.lovasz'], losses.lovasz_hinge(logits, mask))
    torch.testing.assert_close(p['bce_lovasz'], p['bce_lovasz.bce'] + p['bce_lovasz.lovasz'])
    torch.testing.assert_close(total.detach(), p['bce_lovasz'] + 0.5 * p['dice'])


class _Batches(list):
    """An epoch of (inputs, targets) batches, as net.loader gives them."""

    def close(self):
        pass


@pytest.mark.parametrize('name', ['boundary_bce', 'combined_bce'])
def test_train_one_epoch_averages_the_loss_parts(name):
    """The epoch's mean of each part equals a plain loop's image-weighted mean over the batches (lr 0: fixed weights)."""
    from net.loop import train_one_epoch
    from net.models import build_model
    from net.runtime import Runtime
    from utils.data import targets_of
    torch.manual_seed(0)
    border = name.startswith('boundary')
    model = build_model('unet_lite_border' if border else 'unet_lite_ds', pretrained=None)
    rng = np.random.default_rng(0)
    batches = _Batches()
    for n in (3, 5, 2):  # unequal batches: the mean weighs each image once
        masks = (rng.random((n, 64, 64)) < rng.random((n, 1, 1))).astype(np.uint8)
        t = torch.from_numpy(targets_of(masks, border)).float()
        t = {'mask': t[:, :1], **({'border': t[:, 1:]} if border else {})}
        batches.append((torch.randn(n, 3, 64, 64), t))
    loss_fn = losses.build_loss(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    terms = {}
    mean_loss, finished = train_one_epoch(model, batches, loss_fn, opt, Runtime(torch.device('cpu')), terms=terms)
    expected, total, count = {}, 0.0, 0
    model.train()
    with torch.no_grad():
        for x, t in batches:
            total += loss_fn(model(x), t).item() * len(x)
            for k, v in loss_fn.parts.items():
                expected[k] = expected.get(k, 0.0) + v.item() * len(x)
            count += len(x)
    assert finished and set(terms) == set(expected) and len(terms) >= 2
    for k in expected:
        assert terms[k] == pytest.approx(expected[k] / count, rel=1e-4), k
    assert mean_loss == pytest.approx(total / count, rel=1e-4)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UserError) as info:
        losses.build_loss('dice_typo')
    message = str(info.value)
    assert 'dice_typo' in message
    for name in EXPECTED_REQUIRES:
        assert name in message


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match='shape'):
        losses.lovasz_hinge(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 9, 9))
