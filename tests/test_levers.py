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
