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


def test_combined_bce_sym_is_combined_bce_plus_the_symmetric_lovasz():
    logits, mask = _batch()
    out, t = _ds_outputs(logits, mask), {'mask': mask}
    bce, both = losses.build_loss('combined_bce'), losses.build_loss('combined_bce_sym')
    assert both.requires == bce.requires
    a, b = bce(out, t), both(out, t)
    for part in ('salt', 'aux', 'mask_bce'):
        torch.testing.assert_close(both.parts[part], bce.parts[part])
    expected = 0.5 * (losses.lovasz_hinge(logits, mask) + losses.lovasz_hinge(-logits, 1 - mask))
    torch.testing.assert_close(both.parts['mask_lovasz'], expected)
    torch.testing.assert_close(b - a, expected)


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


# ------------------------------------------------------------------ 3. --loss_region center

PAD_PRESETS = {'train_112_v3': 5, 'train_128_v3': 13}


def _tiles(n=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 101, 101), dtype=np.uint8)
    masks = np.zeros((n, 101, 101), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, 80, 2)
        masks[i, r:r + 20, c:c + 15] = 1
    return images, masks


def test_tile_window_of_each_preset_and_refusals():
    from net.geometry import PRESETS, tile_window
    from utils.errors import UserError
    for name, offset in PAD_PRESETS.items():
        assert tile_window(name) == offset
    for name in sorted(set(PRESETS) - set(PAD_PRESETS)):  # the resize presets
        with pytest.raises(UserError, match='--loss_region center') as info:
            tile_window(name)
        assert '\n' not in str(info.value)
    with pytest.raises(UserError, match='val_augs'):
        tile_window('train_128_v3', 'val_128_resize')


@pytest.mark.parametrize('name', sorted(PAD_PRESETS))
def test_the_window_holds_the_tile_on_both_data_paths(name):
    from net.device_aug import build_device_aug
    from net.geometry import build_train_aug, preset, tile_window
    a = tile_window(name)
    images, masks = _tiles()
    # Without random ops both paths place the tile itself in the window.
    x01, t = build_device_aug(preset(name).device, p=0.0)(torch.from_numpy(images)[:, None],
                                                         torch.from_numpy(masks)[:, None], torch.Generator())
    assert x01.shape[-1] == preset(name).size
    np.testing.assert_array_equal((x01[:, 0, a:a + 101, a:a + 101] * 255).round().numpy(), images)
    np.testing.assert_array_equal(t[:, 0, a:a + 101, a:a + 101].numpy(), masks)
    host = build_train_aug(name, p=0.0, seed=0)
    for img, m in zip(images, masks):
        out = host(image=img, mask=m)
        np.testing.assert_array_equal(out['image'][a:a + 101, a:a + 101], img)
        np.testing.assert_array_equal(out['mask'][a:a + 101, a:a + 101], m)
    # With the shift on, the fixed window holds the shifted tile: what the augmentation gives at 101x101
    # before its final pad.
    aug = build_device_aug(preset(name).device, p=1.0)
    q = aug.sample_params(len(images), torch.Generator().manual_seed(3), torch.device('cpu'))
    q['shift_on'][:] = True
    x01, t = aug.apply(torch.from_numpy(images)[:, None], torch.from_numpy(masks)[:, None], q)
    aug._val_image = aug._val_target = lambda v: v
    x101, t101 = aug.apply(torch.from_numpy(images)[:, None], torch.from_numpy(masks)[:, None], q)
    assert (q['dx'] != 0).any()
    torch.testing.assert_close(x01[..., a:a + 101, a:a + 101], x101)
    torch.testing.assert_close(t[..., a:a + 101, a:a + 101], t101)


def test_tile_window_loss_sees_the_window_only():
    a, size = 5, 112
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 1, size, size)
    mask[0, :, 20:40, 30:50] = 1
    mask[1, :, :3, :] = 1  # salt in the pad only: the window is empty
    out = {'mask': torch.randn(mask.shape, generator=g, requires_grad=True),
           'aux': [torch.randn(mask.shape, generator=g)], 'salt': torch.randn(3, generator=g)}
    for name in ('combined', 'combined_salt', 'BCE'):
        inner = losses.build_loss(name)
        fn = losses.TileWindowLoss(losses.build_loss(name), a)
        o = {k: out[k] for k in inner.requires}
        value = fn(o, {'mask': mask})
        crop = lambda v: v[..., a:a + 101, a:a + 101]
        ref = inner({k: [crop(x) for x in v] if k == 'aux' else (v if k == 'salt' else crop(v)) for k, v in o.items()},
                    {'mask': crop(mask)})
        torch.testing.assert_close(value, ref)
        assert fn.requires == inner.requires and set(fn.parts) == set(inner.parts)
        assert fn.salt_gate == inner.salt_gate
        out['mask'].grad = None
        value.backward()
        grad = out['mask'].grad.clone()
        inside = torch.zeros(size, size, dtype=torch.bool)
        inside[a:a + 101, a:a + 101] = True
        assert (grad[..., ~inside] == 0).all() and grad[..., inside].abs().sum() > 0
    fn = losses.TileWindowLoss(losses.build_loss('combined'), a)
    fn(out, {'mask': mask})
    assert losses.salt_target(mask[..., a:a + 101, a:a + 101]).tolist() == [1.0, 0.0, 0.0]


def _data_dir(tmp_path, n=24, n_folds=4, seed=0):
    """A stacked data folder of n synthetic tiles: fold k's images all have grey levels 60k..60k+50."""
    d = tmp_path / 'data'
    d.mkdir()
    rng = np.random.default_rng(seed)
    folds = np.arange(n) % n_folds
    images = np.stack([rng.integers(60 * f, 60 * f + 50, (101, 101)) for f in folds]).astype(np.uint8)
    masks = np.zeros((n, 101, 101), np.uint8)
    for i in range(n):
        if i % 3:
            r, c, h = rng.integers(0, 60), rng.integers(0, 60), rng.integers(3, 40)
            masks[i, r:r + h, c:c + h] = 1
    ids = [f'id{i:03d}' for i in range(n)]
    np.save(d / 'train_images.npy', images)
    np.save(d / 'train_masks.npy', masks)
    (d / 'train.csv').write_text('id,rle_mask\n' + ''.join(f'{i},\n' for i in ids))
    (d / 'train_with_folds.csv').write_text('id,fold\n' + ''.join(f'{i},{f}\n' for i, f in zip(ids, folds)))
    return d


def _train_argv(data, exp, *more):
    return ['--arch', 'unet_plain_ds_w8', '--loss', 'combined_bce', '--optimizer', 'adam_1e-3',
            '--train_augs', 'train_112_v3', '--batch_size', '6', '--val_batch_size', '8', '--data_dir', str(data),
            '--experiment_dir', str(exp), '--device', 'cpu', '--threads', '1', '--fold', '0', '--loader', 'device',
            *more]


def test_loss_region_is_refused_with_a_resize_preset(tmp_path):
    from net import training
    from utils.errors import UserError
    args = training.parse_args(['--experiment_dir', str(tmp_path / 'e'), '--loss_region', 'center',
                                '--train_augs', 'train_128_v1'])
    with pytest.raises(UserError, match='train_128_v1'):
        training.build_config(args)
    args = training.parse_args(['--experiment_dir', str(tmp_path / 'e'), '--train_augs', 'train_128_v1'])
    assert training.build_config(args).loss_region == 'full'
    assert not isinstance(training.run_loss(training.build_config(args)), losses.TileWindowLoss)
    old = training.TrainConfig.from_saved({'loss': 'BCE', 'train_augs': 'train_128_v1', 'experiment_dir': 'e'})
    assert not isinstance(training.run_loss(old), losses.TileWindowLoss)  # a config saved before the option


@pytest.mark.slow
@pytest.mark.parametrize('loader', ['device', 'prefetch'])
def test_loss_region_reaches_the_loss_and_survives_resume(tmp_path, monkeypatch, loader):
    import json
    from net import training
    data, exp = _data_dir(tmp_path), tmp_path / 'exp'
    seen = []
    real_fit = training.fit

    def spy(model, loss_fn, optimizer, train_set, *args, **kwargs):
        seen.append(loss_fn)
        return real_fit(model, loss_fn, optimizer, train_set, *args, **kwargs)
    monkeypatch.setattr(training, 'fit', spy)
    argv = _train_argv(data, exp, '--n_epochs', '1', '--loss_region', 'center', '--loader', loader)
    training.main(argv)
    assert json.loads((exp / 'train_config.json').read_text())['loss_region'] == 'center'
    training.main(_train_argv(data, exp, '--n_epochs', '2', '--resume', '--loader', loader))
    assert len(seen) == 2
    for fn in seen:
        assert isinstance(fn, losses.TileWindowLoss) and fn.offset == 5 and fn.inner.mask_bce_weight == 1.0
    assert json.loads((exp / 'train_config.json').read_text())['loss_region'] == 'center'


# ------------------------------------------------------------------ 4. unet_plain_ds variants

VARIANTS = ('unet_plain_ds_scse', 'unet_plain_ds_hyper', 'unet_plain_ds_dil')


def _params(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def test_plain_encoder_first_level_is_full_resolution(one_thread):
    from net.models import build_model
    # the "full-resolution stem" of the 15th place is the baseline's already: no stride before level 1
    for name in ('unet_plain_ds', 'unet_plain_ds_dil'):
        enc = build_model(name).encoder
        feats = enc(torch.randn(1, 3, 32, 32))
        assert enc.strides[0] == 1 and feats[0].shape[-2:] == (32, 32)
        assert all(m.stride == (1, 1) for m in enc.levels[0].modules() if isinstance(m, torch.nn.Conv2d))


def test_dilated_variant_keeps_stride_8(one_thread):
    from net.models import build_model
    base, dil = build_model('unet_plain_ds_w8'), build_model('unet_plain_ds_dil_w8')
    x = torch.randn(1, 3, 112, 112)
    assert [f.shape[-1] for f in base.encoder(x)] == [112, 56, 28, 14, 7]
    assert [f.shape[-1] for f in dil.encoder(x)] == [112, 56, 28, 14, 14]
    assert dil.encoder.strides == (1, 2, 4, 8, 8)
    convs = [m for m in dil.encoder.levels[-1].modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(c.dilation == (2, 2) and c.padding == (2, 2) for c in convs)
    assert all(m.dilation == (1, 1) for lvl in dil.encoder.levels[:-1] for m in lvl.modules()
               if isinstance(m, torch.nn.Conv2d))
    # the same weights otherwise: only the first decoder step loses its transposed conv (no upsampling)
    assert dil.blocks[0].up is None and base.blocks[0].up is not None
    assert set(_params(dil)) == set(_params(base)) - {n for n in _params(base) if n.startswith('blocks.0.up.')}
    # a multiple of 8 is enough now; the mask keeps the input's size
    out = dil(torch.randn(2, 3, 104, 104))
    assert out['mask'].shape == (2, 1, 104, 104) and len(out['aux']) == 4 and out['salt'].shape == (2,)


def test_scse_variant_adds_gates_only(one_thread):
    from net.models import build_model
    from net.models.common import SCSE
    base, gated = build_model('unet_plain_ds'), build_model('unet_plain_ds_scse')
    assert not any(isinstance(m, SCSE) for m in base.modules())
    assert all(isinstance(b.scse, SCSE) for b in gated.blocks)
    extra = set(_params(gated)) - set(_params(base))
    assert extra and all('.scse.' in n for n in extra) and set(_params(base)) <= set(_params(gated))
    assert not any(isinstance(m, SCSE) for m in gated.encoder.modules())


def test_hyper_variant_fuses_salt_in_the_hypercolumn_conv(one_thread):
    from net.models import build_model
    from net.models.common import SaltFusion
    m = build_model('unet_plain_ds_hyper_w8').eval()
    assert m.hypercolumn and m.hyper is None and isinstance(m.fuse, SaltFusion)
    assert m.fuse.conv.in_channels == 8 * len(m.blocks) and m.mask_head.in_channels == 16
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = m(x)['mask']
        m.salt_head.fc[0].weight.add_(0.5)  # other salt features: the mask changes through the fusion
        after = m(x)['mask']
    assert not torch.allclose(before, after)
    m.train()
    out = m(x)
    out['mask'].mean().backward()
    assert all(r[0].weight.grad.abs().sum() > 0 for r in m.hyper_reduce)  # every scale reaches the mask


@pytest.mark.parametrize('name', VARIANTS)
def test_w8_twins_are_half_width(name, one_thread):
    from net.models import build_model
    wide, narrow = build_model(name), build_model(name + '_w8')
    assert wide.encoder.channels == (16, 32, 64, 128, 256) and narrow.encoder.channels == (8, 16, 32, 64, 128)
    assert type(wide.fuse) is type(narrow.fuse) and wide.encoder.strides == narrow.encoder.strides
    assert wide.output_keys == narrow.output_keys == {'mask', 'aux', 'salt'}


# ------------------------------------------------------------------ 5. --small_crops

def test_corner_counts_by_hand():
    from net.small_crops import corner_counts
    m = np.zeros((1, 101, 101), np.uint8)
    m[0, :3, :4] = 1       # 12 pixels in the top-left corner
    m[0, 99:, 98:] = 1     # 6 in the bottom right
    c = corner_counts(m, [2, 5, 101])
    np.testing.assert_array_equal(c[0, 0], [4, 12, 18])
    np.testing.assert_array_equal(c[0, 1], [0, 0, 18])
    np.testing.assert_array_equal(c[0, 2], [0, 0, 18])
    np.testing.assert_array_equal(c[0, 3], [4, 6, 18])


def test_small_crops_hold_little_salt_and_are_deterministic():
    import cv2
    from net.small_crops import SALT_PIXELS, corner_crop, small_mask_crops
    images, masks = _tiles(12, seed=1)
    masks[:] = 0
    rng = np.random.default_rng(2)
    for i in range(12):  # a blob of 60-400 pixels near a random corner, another far from it
        h = rng.integers(8, 20)
        masks[i, 2:2 + h, 3:3 + h] = 1
        masks[i, 70:101, 40:101] = i % 2
    ci, cm, src = small_mask_crops(images, masks, 0.5, seed=7)
    assert ci.shape == cm.shape == (6, 101, 101) and ci.dtype == cm.dtype == np.uint8 and set(np.unique(cm)) <= {0, 1}
    for img, m, (i, corner, side) in zip(ci, cm, src):
        held = int(corner_crop(masks[i], corner, side).sum())
        assert SALT_PIXELS[0] <= held <= SALT_PIXELS[1]
        np.testing.assert_array_equal(img, cv2.resize(corner_crop(images[i], corner, side), (101, 101),
                                                      interpolation=cv2.INTER_LINEAR))
        assert m.sum() > held  # scaled up by (101 / side)^2, nearest
    again = small_mask_crops(images, masks, 0.5, seed=7)
    np.testing.assert_array_equal(again[0], ci)
    np.testing.assert_array_equal(again[2], src)
    assert not np.array_equal(small_mask_crops(images, masks, 0.5, seed=8)[2], src)
    assert len(small_mask_crops(images, masks, 0.0, seed=7)[0]) == 0
    from utils.errors import UserError
    with pytest.raises(UserError, match='small_crops'):
        small_mask_crops(images, np.zeros_like(masks), 0.5, seed=7)


def test_loss_weights_per_image():
    logits, mask = _batch()
    out, n = _ds_outputs(logits, mask), len(mask)
    has = losses.salt_target(mask)
    for name in ('combined', 'combined_bce', 'combined_salt', 'combined_sym'):
        fn = losses.build_loss(name)
        assert fn.takes_weight
        plain = fn(out, {'mask': mask})
        ones = fn(out, {'mask': mask, 'weight': torch.ones(n)})
        torch.testing.assert_close(ones, plain)
        w = torch.tensor([1.0, 0.5, 1.0, 0.5, 1.0])
        total = fn(out, {'mask': mask, 'weight': w})
        # by hand: each image's terms times its weight, divided by the (salt) image count as before
        per_mask = (losses.lovasz_hinge_per_image(logits, mask, fn.symmetric) if fn.mask_lovasz_weight
                    else losses.bce_per_image(logits, mask))
        sel, count = (has * w, has.sum()) if fn.salt_only else (w, n)
        mask_term = (per_mask * sel).sum() / count
        salt = (F.binary_cross_entropy_with_logits(out['salt'], has, reduction='none') * w).mean()
        aux_fn = losses.lovasz_hinge_per_image if fn.aux_kind == 'lovasz' else losses.bce_per_image
        aux = sum((aux_fn(a, mask) * has * w).sum() / has.sum() for a in out['aux'])
        weight = fn.mask_lovasz_weight or fn.mask_bce_weight
        torch.testing.assert_close(total, weight * mask_term + fn.salt_weight * salt + fn.aux_weight * aux)
    # A zero weight takes the image out of every term's gradient.
    x = logits.clone().requires_grad_(True)
    s = out['salt'].clone().requires_grad_(True)
    losses.build_loss('combined')({**out, 'mask': x, 'salt': s}, {'mask': mask, 'weight': torch.tensor([1.0, 1, 0, 1, 1])}).backward()
    assert (x.grad[2] == 0).all() and s.grad[2] == 0 and x.grad[3].abs().sum() > 0
    assert not losses.build_loss('BCE').takes_weight
    assert losses.TileWindowLoss(losses.build_loss('combined'), 5).takes_weight


@pytest.mark.parametrize('loader', ['device', 'prefetch'])
def test_the_weights_reach_the_batches_on_both_paths(loader):
    from net.loader import TrainBatches
    from net.runtime import Runtime
    rt = Runtime(torch.device('cpu'), loader=loader)
    images, masks = _tiles(8)
    weights = np.array([1, 1, 1, 1, 1, 1, 0.5, 0.5], np.float32)
    images[6:] = 7  # the weighted samples are recognisable
    batches = TrainBatches(images, masks, 'train_112_v3', rt, weights=weights)
    seen = 0
    epoch = batches.epoch(4, 0, 1)
    try:
        for x, t in epoch:
            assert t['weight'].shape == (4,) and t['weight'].dtype == torch.float32
            # the sample whose image is all 7s is the one with weight 0.5
            const = x[:, 0].flatten(1).std(1) < 1e-6
            assert torch.equal(const, t['weight'] == 0.5)
            seen += len(x)
    finally:
        epoch.close()
    assert seen == 8
    plain = TrainBatches(images, masks, 'train_112_v3', rt).epoch(4, 0, 1)
    try:
        assert 'weight' not in next(iter(plain))[1]
    finally:
        plain.close()


def test_crops_come_from_the_training_part_only(tmp_path):
    from net import training
    from net.small_crops import CROP_WEIGHT
    data = _data_dir(tmp_path, n=48)
    args = training.parse_args(_train_argv(data, tmp_path / 'exp', '--small_crops', '0.5'))
    config = training.build_config(args)
    assert config.small_crops == 0.5
    tr, trm, w, va, _ = training.training_arrays(config)
    n_train = 36  # fold 0 of 4 is validation
    assert len(tr) == len(trm) == len(w) == n_train + 18
    np.testing.assert_array_equal(w, [1.0] * n_train + [CROP_WEIGHT] * 18)
    # fold k's tiles have grey levels 60k..60k+49; a bilinear resize stays inside one tile's range
    assert va.max() < 50
    for crop in tr[n_train:]:
        fold = crop.min() // 60
        assert fold != 0 and crop.max() < 60 * fold + 50
    # the same config gives the same crops
    np.testing.assert_array_equal(training.training_arrays(config)[0], tr)


def test_small_crops_refused_with_a_loss_that_cannot_weigh(tmp_path):
    from net import training
    from utils.errors import UserError
    args = training.parse_args(['--experiment_dir', str(tmp_path / 'e'), '--small_crops', '0.3', '--loss', 'BCE'])
    with pytest.raises(UserError, match='combined') as info:
        training.build_config(args)
    assert '\n' not in str(info.value)
    with pytest.raises(SystemExit):
        training.parse_args(['--experiment_dir', str(tmp_path / 'e'), '--small_crops', '-1'])


@pytest.mark.slow
def test_small_crops_train_and_survive_resume(tmp_path, monkeypatch, capsys):
    import json
    from net import training
    data, exp = _data_dir(tmp_path, n=48), tmp_path / 'exp'
    sizes = []
    real = training.TrainBatches

    def spy(images, masks, *args, weights=None, **kwargs):
        sizes.append((len(images), None if weights is None else float(weights.sum())))
        return real(images, masks, *args, weights=weights, **kwargs)
    monkeypatch.setattr(training, 'TrainBatches', spy)
    training.main(_train_argv(data, exp, '--n_epochs', '1', '--small_crops', '0.25', '--batch_size', '9'))
    assert json.loads((exp / 'train_config.json').read_text())['small_crops'] == 0.25
    training.main(_train_argv(data, exp, '--n_epochs', '2', '--resume', '--batch_size', '9'))
    assert sizes == [(36 + 9, 36 + 4.5)] * 2
