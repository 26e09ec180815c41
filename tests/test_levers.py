"""The levers aimed at images with little salt: symmetric lovasz, salt-only segmentation losses, the
loss on the tile's window only, the unet_plain_ds variants and the synthetic small-mask crops (CPU, small)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from net import losses


def _batch(n=5, size=16, seed=0):
    """Masks (n,1,size,size): empty, full, a small square, then random blobs; logits with ties."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 1, size, size)
    m[1] = 1
    m[2, :, 3:6, 4:8] = 1
    noise = torch.rand(n - 3, 1, size // 4, size // 4, generator=g)
    m[3:] = (F.interpolate(noise, size=(size, size), mode='bilinear', align_corners=False) > 0.5).float()
    # Quantised logits: many equal errors, so the sort's tie order is exercised.
    logits = (2.0 * torch.randn(m.shape, generator=g)).round()
    return logits, m


def _ds_outputs(logits, mask, seed=1, n_aux=3):
    g = torch.Generator().manual_seed(seed)
    return {'mask': logits, 'aux': [torch.randn(mask.shape, generator=g) for _ in range(n_aux)],
            'salt': torch.randn(mask.shape[0], generator=g)}


# ------------------------------------------------------------------ 1. combined_sym

def test_symmetric_lovasz_hand_case():
    # Two pixels, truth (salt, background), logits (2, 0): only the background pixel has a hinge error (1).
    # Salt class: the error set {background} gives Jaccard loss 1 - 1/2; background class: 1 - 0/1.
    x, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    assert losses.lovasz_hinge_per_image(x, y).item() == pytest.approx(0.5)
    assert losses.lovasz_hinge_per_image(-x, 1 - y).item() == pytest.approx(1.0)
    assert losses.lovasz_hinge_per_image(x, y, symmetric=True).item() == pytest.approx(0.75)


@pytest.mark.parametrize('seed', range(3))
def test_symmetric_is_the_mean_of_the_two_hinges(seed):
    logits, mask = _batch(seed=seed)
    both = losses.lovasz_hinge_per_image(logits, mask, symmetric=True)
    two_sorts = 0.5 * (losses.lovasz_hinge_per_image(logits, mask) + losses.lovasz_hinge_per_image(-logits, 1 - mask))
    torch.testing.assert_close(both, two_sorts, rtol=1e-6, atol=1e-6)


def test_combined_sym_changes_only_the_final_mask_lovasz():
    logits, mask = _batch()
    out, t = _ds_outputs(logits, mask), {'mask': mask}
    plain, sym = losses.build_loss('combined'), losses.build_loss('combined_sym')
    assert sym.requires == plain.requires
    a, b = plain(out, t), sym(out, t)
    for part in ('salt', 'aux'):
        torch.testing.assert_close(sym.parts[part], plain.parts[part])
    expected = 0.5 * (losses.lovasz_hinge(logits, mask) + losses.lovasz_hinge(-logits, 1 - mask))
    torch.testing.assert_close(sym.parts['mask_lovasz'], expected)
    torch.testing.assert_close(b - a, expected - plain.parts['mask_lovasz'])
    assert not torch.isclose(a, b)


# ------------------------------------------------------------------ 2. salt-only segmentation losses

SALT_ONLY = ('combined_bce_salt', 'combined_salt', 'combined_sym_salt')


def test_salt_only_losses_match_the_loss_on_the_salt_images():
    logits, mask = _batch()
    has = losses.salt_target(mask).bool()
    assert not has.all() and has.any()
    out, t = _ds_outputs(logits, mask), {'mask': mask}
    sel = {'mask': logits[has], 'aux': [a[has] for a in out['aux']], 'salt': out['salt'][has]}
    # mask and aux terms equal those of the all-images loss applied to the salt images alone
    for name, ref_name, part in (('combined_bce_salt', 'combined_bce', 'mask_bce'),
                                 ('combined_salt', 'combined', 'mask_lovasz'),
                                 ('combined_sym_salt', 'combined_sym', 'mask_lovasz')):
        fn, ref = losses.build_loss(name), losses.build_loss(ref_name)
        total = fn(out, t)
        ref(sel, {'mask': mask[has]})
        torch.testing.assert_close(fn.parts[part], ref.parts[part])
        torch.testing.assert_close(fn.parts['aux'], ref.parts['aux'])
        # the salt head still sees every image, empty ones included
        salt = losses.bce_with_logits(out['salt'], has.float())
        torch.testing.assert_close(fn.parts['salt'], salt)
        torch.testing.assert_close(total, fn.parts[part] + fn.salt_weight * salt + fn.aux_weight * fn.parts['aux'])
    sym = losses.build_loss('combined_sym_salt')
    sym(out, t)
    torch.testing.assert_close(sym.parts['mask_lovasz'], 0.5 * (losses.lovasz_hinge(logits[has], mask[has])
                                                               + losses.lovasz_hinge(-logits[has], 1 - mask[has])))


@pytest.mark.parametrize('name', SALT_ONLY)
def test_salt_only_mask_gradient_is_zero_on_empty_images(name):
    logits, mask = _batch()
    has = losses.salt_target(mask).bool()
    x = logits.clone().requires_grad_(True)
    out = _ds_outputs(x, mask)
    out['salt'].requires_grad_(True)
    losses.build_loss(name)(out, {'mask': mask}).backward()
    assert (x.grad[~has] == 0).all()
    assert (x.grad[has].flatten(1).abs().sum(1) > 0).all()
    assert (out['salt'].grad != 0).all()  # empty images included: the salt head decides emptiness
    # A confidently wrong mask on the empty images costs nothing.
    wrong = torch.where(has[:, None, None, None], 20.0 * (2 * mask - 1), torch.full_like(mask, 20.0))
    perfect = {'mask': wrong, 'aux': [20.0 * (2 * mask - 1)] * 3, 'salt': 20.0 * (2 * has.float() - 1)}
    assert losses.build_loss(name)(perfect, {'mask': mask}).item() < 1e-3
    # An all-empty batch: no segmentation term at all, the salt BCE alone.
    empty = torch.zeros_like(mask)
    fn = losses.build_loss(name)
    value = fn(out, {'mask': empty})
    torch.testing.assert_close(value, fn.salt_weight * losses.bce_with_logits(out['salt'], torch.zeros(len(mask))))


def test_salt_only_losses_weigh_the_salt_head_up_and_gate_validation():
    for name in SALT_ONLY:
        fn = losses.build_loss(name)
        assert fn.salt_only and fn.salt_gate == 0.5
        assert fn.salt_weight >= 10 * losses.build_loss('combined').salt_weight
    for name in ('combined', 'combined_bce', 'combined_sym', 'combined_hyper'):
        assert losses.build_loss(name).salt_gate is None


class _FixedSalt(torch.nn.Module):
    """A stand-in model: the same mask logit everywhere, salt logits given per image."""
    output_keys = frozenset({'mask', 'aux', 'salt'})

    def __init__(self, salt):
        super().__init__()
        self.salt = salt
        self.seen = 0

    def forward(self, x):
        n = len(x)
        s = self.salt[self.seen:self.seen + n]
        self.seen += n
        m = torch.full((n, 1, *x.shape[-2:]), 3.0)
        return {'mask': m, 'aux': [m], 'salt': s}


def test_validation_empties_masks_by_the_salt_head_for_salt_only_losses():
    from net.augmentations import build_back_transform, build_val_aug
    from net.loop import evaluate
    from net.runtime import Runtime
    rt = Runtime(torch.device('cpu'))
    images = np.zeros((4, 101, 101), np.uint8)
    targets = np.zeros((4, 1, 101, 101), np.uint8)
    salt = torch.tensor([4.0, -4.0, 0.1, -0.1])
    args = (build_val_aug('val_112'), build_back_transform('crop_from_112'), rt)
    _, gated = evaluate(_FixedSalt(salt), images, targets, losses.build_loss('combined_salt'), *args)
    np.testing.assert_array_equal(gated.reshape(4, -1).max(1) > 0.5, [True, False, True, False])
    _, plain = evaluate(_FixedSalt(salt), images, targets, losses.build_loss('combined'), *args)
    assert (plain > 0.5).all()
    np.testing.assert_array_equal(gated[[0, 2]], plain[[0, 2]])
