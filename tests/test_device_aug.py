"""The batched device augmentations against the albumentations sets they stand for."""
import functools

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import albumentations as A
from albumentations.augmentations.geometric import functional as fgeo
from albumentations.augmentations.pixel import functional as fpix

from net import augmentations as aug
from net import device_aug as dev
from net import geometry as geo
from utils.data import border_of
from utils.errors import UserError

NAMES = sorted(geo.PRESETS)
SIZES = {name: geo.PRESETS[name].size for name in NAMES}
# Draws per set in the distribution tests; 256 outputs cost more per draw, and that set's affine code
# is the one train_128_v2 checks with 2000.
N_DIST = {'train_256_v1': 1000}
N_DEFAULT = 2000
CHUNK = 250  # batch for them (2000 x 256 x 256 floats at once would be half a GB)


def _realish_image(rng):
    yy, xx = np.mgrid[:101, :101]
    img = 60 + 1.2 * yy + 0.4 * xx + rng.normal(0, 12, (101, 101))
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask():
    # Asymmetric, touching the frame: a flip, transpose or off-by-one shift changes it.
    m = np.zeros((101, 101), np.uint8)
    cv2.circle(m, (40, 62), 24, 1, -1)
    m[6:30, 60:100] = 1
    m[0:20, 0:8] = 1
    return m


def _markers():
    # Channel 0, a horizontal bar: its area follows the scale, its orientation the rotation.
    # Channel 1, a square left of centre, 25 px from the frame: its centroid gives the flip (which side)
    # and, for the shift sets, the exact integer offsets (a 10 px shift plus the 13 px final pad never
    # brings a mirrored copy into view).
    bar = np.zeros((101, 101), np.uint8)
    bar[30:36, 25:66] = 1
    square = np.zeros((101, 101), np.uint8)
    square[45:55, 25:35] = 1
    return bar, square


def _batch(a, n):
    return torch.from_numpy(np.ascontiguousarray(a))[None, None].repeat(n, 1, 1, 1)


def _stats(x01, t):
    """Per-draw statistics: x01 float (N,1,S,S), t float (N,2,S,S) (bar, square) -> dict of (N,) arrays."""
    n, _, s, _ = t.shape
    ar = torch.arange(s, dtype=torch.float32)
    bar, sq = t[:, 0], t[:, 1]
    area = bar.sum((1, 2))
    cols, rows = bar.sum(1), bar.sum(2)  # (N, S) profiles
    bx, by = cols @ ar / area, rows @ ar / area
    mu20 = cols @ ar ** 2 / area - bx ** 2
    mu02 = rows @ ar ** 2 / area - by ** 2
    mu11 = torch.einsum('nij,i,j->n', bar, ar, ar) / area - bx * by
    sq_area = sq.sum((1, 2))
    sx, sy = sq.sum(1) @ ar / sq_area, sq.sum(2) @ ar / sq_area
    flip = sx > (s - 1) / 2
    std, mean = torch.std_mean(x01.reshape(n, -1), 1)
    out = {
        'mean': mean, 'std': std, 'area': area,
        # |orientation|: a flip negates it, and the rotation range is symmetric anyway.
        'angle': 0.5 * torch.atan2(2 * mu11, mu20 - mu02).abs(),
        'square_x': torch.where(flip, s - 1 - sx, sx), 'square_y': sy, 'flip': flip.float(), 'raw_x': sx,
    }
    return {k: v.numpy() for k, v in out.items()}


def _offsets(st, name):
    """Integer shift (dx, dy) of each draw of a shift set, from the square's centroid at 101x101.

    The flip comes first: the square sits at x0 or 100 - x0, then the shift moves it by -dx.
    """
    pad = aug.PAD_128[0] if SIZES[name] == 128 else aug.PAD_112[0]
    _, square = _markers()
    rows, cols = np.nonzero(square)
    x = st['raw_x'] - pad
    base = np.where(st['flip'] > 0, aug.SRC - 1 - cols.mean(), cols.mean())
    return np.rint(base - x), np.rint(rows.mean() - (st['square_y'] - pad))


def ks_distance(a, b, tol=0.0):
    """Two-sample Kolmogorov-Smirnov statistic, sup |F_a - F_b|, blind to shifts up to ``tol``.

    With tol > 0 a value of one sample counts as matching the other within tol, so that the same draw
    quantised differently (uint8 cv2 resize vs float torch) does not show as a jump between the ECDFs.
    """
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    v = np.concatenate([a, b])

    def cdf(s, x):
        return np.searchsorted(s, x, side='right') / len(s)

    return max((cdf(a, v) - cdf(b, v + tol)).max(), (cdf(b, v) - cdf(a, v + tol)).max())


def ks_bound(n):
    # Reject at the 0.1% level, n draws each side: c(alpha) * sqrt(2 / n), c = sqrt(-ln(alpha / 2) / 2).
    return np.sqrt(-np.log(0.001 / 2) / 2) * np.sqrt(2 / n)


def rate_bound(n):
    # Two rates from n draws each: 4 standard errors of their difference at p = 0.5.
    return 4 * np.sqrt(0.25 * 2 / n)


# cv2 resizes in uint8 fixed point, the device in float: on the same draw the means differ by up to
# ~5e-4 (cv2 runs ~0.12 grey levels high) and the stds by ~2e-5.
TOL = {'mean': 1e-3, 'std': 1e-4}


@functools.lru_cache(maxsize=None)
def _albu_stats(name):
    rng = np.random.default_rng(0)
    img, (bar, square) = _realish_image(rng), _markers()
    t = geo.build_train_aug(name, seed=1)
    parts = []
    for _ in range(N_DIST.get(name, N_DEFAULT) // CHUNK):
        outs = [t(image=img, masks=[bar, square]) for _ in range(CHUNK)]
        x01 = torch.from_numpy(np.stack([o['image'] for o in outs])[:, None]).float() / 255
        parts.append(_stats(x01, torch.from_numpy(np.stack([np.stack(o['masks']) for o in outs])).float()))
    return _concat(parts)


def _concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _device_stats(name, daug, seed=2):
    rng = np.random.default_rng(0)
    img, (bar, square) = _realish_image(rng), _markers()
    g = torch.Generator().manual_seed(seed)
    images = _batch(img, CHUNK)
    targets = torch.cat([_batch(bar, CHUNK), _batch(square, CHUNK)], 1)
    return _concat([_stats(*daug(images, targets, g)) for _ in range(N_DIST.get(name, N_DEFAULT) // CHUNK)])


def _mismatches(name, got, want):
    """Which statistics of ``got`` (device draws) differ from ``want`` (albumentations draws)."""
    n = N_DIST.get(name, N_DEFAULT)
    bad = {}
    if abs(got['flip'].mean() - want['flip'].mean()) > rate_bound(n):
        bad['flip rate'] = (got['flip'].mean(), want['flip'].mean())
    for k in ('mean', 'std', 'area', 'angle', 'square_x', 'square_y'):
        d = ks_distance(got[k], want[k], TOL.get(k, 1e-9))
        if d > ks_bound(n):
            bad[k] = d
    if name.endswith('_v3'):
        (gx, gy), (wx, wy) = _offsets(got, name), _offsets(want, name)
        for axis, g, w in (('dx', gx, wx), ('dy', gy, wy)):
            if (g.min(), g.max()) != (w.min(), w.max()):
                bad[axis + ' range'] = ((g.min(), g.max()), (w.min(), w.max()))
            if abs((g != 0).mean() - (w != 0).mean()) > rate_bound(n):
                bad[axis + ' shift rate'] = ((g != 0).mean(), (w != 0).mean())
    return bad


def test_registry_matches_train_augs():
    assert set(dev.DEVICE_AUGS) == {g.device for g in geo.PRESETS.values()}
    for name in NAMES:
        g = geo.PRESETS[name]
        twin = dev.build_device_aug(g.device)
        assert (twin.val_name, twin.out_size) == (g.val, g.size), name


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_distributions_match_albumentations(name):
    want = _albu_stats(name)
    got = _device_stats(name, dev.build_device_aug(name))
    assert _mismatches(name, got, want) == {}
    if name.endswith('_v3'):
        assert _offsets(want, name)[0].max() == aug.SHIFT_V3  # the marker does see the whole range


@pytest.mark.parametrize('name, wrong, caught', [
    # Flip side and shift presence are read independently, so one run can test both.
    ('train_128_v3', dict(p_flip=0.35, p_shift=0.3), {'flip rate', 'dx shift rate'}),
    ('train_128_v3', dict(shift=8), {'dx range'}),
    ('train_128_v3', dict(bc=(0.2, 0.2)), {'mean'}),
    ('train_128_v2', dict(rotate=(-20.0, 20.0)), {'angle'}),
    ('train_128_v2', dict(scale=(0.8, 1.2)), {'area'}),
    ('train_128_v2', dict(translate=(-0.1, 0.1)), {'square_x'}),
])
@pytest.mark.slow
def test_distribution_check_catches_a_wrong_set(name, wrong, caught):
    # The same comparison must fail for a set with a parameter off, or it proves nothing.
    daug = dev.build_device_aug(name)
    for k, v in wrong.items():
        setattr(daug, k, v)
    assert caught <= set(_mismatches(name, _device_stats(name, daug), _albu_stats(name)))


@pytest.mark.parametrize('name', NAMES)
def test_p0_is_the_paired_val_transform(name):
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 256, (4, 1, 101, 101), dtype=np.uint8))
    masks = torch.from_numpy((rng.random((4, 2, 101, 101)) < 0.5).astype(np.uint8))
    masks[0, 0] = torch.from_numpy(_mask())
    x01, t = dev.build_device_aug(name, p=0)(images, masks, torch.Generator().manual_seed(0))
    val = aug.build_val_aug(geo.PRESETS[name].val)
    assert torch.equal(x01, val(images.float() / 255.0))
    # Targets land where the albumentations set (p=0) puts its masks.
    albu = geo.build_train_aug(name, p=0)
    for i in range(len(images)):
        out = albu(image=images[i, 0].numpy(), masks=list(masks[i].numpy()))
        np.testing.assert_array_equal(t[i].numpy(), np.stack(out['masks']).astype(np.float32))
        # cv2 resizes in uint8 fixed point, the device in float: at most one grey level apart.
        assert np.abs(out['image'] / 255.0 - x01[i, 0].numpy()).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize('name', NAMES)
def test_image_and_targets_stay_aligned(name):
    m = _mask()
    images = _batch(m * 200 + 20, 64)
    x01, t = dev.build_device_aug(name)(images, _batch(m, 64), torch.Generator().manual_seed(4))
    # Darkest salt and brightest background after b/c and gamma are ~152 and ~67 grey levels.
    salt = (x01 > 110 / 255).float()
    disagree = (salt != t).float().mean((1, 2, 3))
    if name.endswith('_v3'):
        assert torch.equal(salt, t)  # flips, integer shifts and pads: no interpolation
    else:
        # Bilinear image vs nearest mask: boundary pixels may disagree. The albumentations sets score
        # up to 0.012 (mean 0.006) on this mask; a half-pixel slip would roughly double that.
        assert disagree.max() < 0.015, disagree.max()
        assert disagree.mean() < 0.008, disagree.mean()


@pytest.mark.parametrize('name', NAMES)
def test_same_seed_same_batch_other_seed_other_batch(name):
    rng = np.random.default_rng(5)
    images, masks = _batch(_realish_image(rng), 8), _batch(_mask(), 8)
    daug = dev.build_device_aug(name)
    a = daug(images, masks, torch.Generator().manual_seed(11))
    b = daug(images, masks, torch.Generator().manual_seed(11))
    c = daug(images, masks, torch.Generator().manual_seed(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    # Per-sample decisions: identical inputs come out differently within one batch.
    assert len({tuple(a[0][i].flatten()[::97].tolist()) for i in range(8)}) > 1


@pytest.mark.parametrize('name', NAMES)
def test_two_target_channels_move_together(name):
    rng = np.random.default_rng(6)
    m = _mask()
    border = border_of(m)
    images = _batch(_realish_image(rng), 16)
    daug = dev.build_device_aug(name)
    x2, t2 = daug(images, torch.cat([_batch(m, 16), _batch(border, 16)], 1), torch.Generator().manual_seed(7))
    x1, t1 = daug(images, _batch(border, 16), torch.Generator().manual_seed(7))
    assert torch.equal(x1, x2)
    assert torch.equal(t2[:, 1:], t1)
    _, tm = daug(images, _batch(m, 16), torch.Generator().manual_seed(7))
    assert torch.equal(t2[:, :1], tm)
    _, tc = daug(images, torch.cat([_batch(m, 16), _batch(1 - m, 16)], 1), torch.Generator().manual_seed(7))
    assert torch.equal(tc.sum(1), torch.ones_like(tc[:, 0]))


@pytest.mark.parametrize('name', NAMES)
def test_output_dtype_shape_range(name):
    rng = np.random.default_rng(8)
    images = torch.from_numpy(rng.integers(0, 256, (6, 1, 101, 101), dtype=np.uint8))
    images[0] = 255
    images[1] = 0
    masks = torch.from_numpy((rng.random((6, 2, 101, 101)) < 0.3).astype(np.uint8))
    s = SIZES[name]
    x01, t = dev.build_device_aug(name)(images, masks, torch.Generator().manual_seed(9))
    assert x01.dtype == t.dtype == torch.float32
    assert x01.shape == (6, 1, s, s) and t.shape == (6, 2, s, s)
    assert x01.min() >= 0 and x01.max() <= 1
    assert set(t.unique().tolist()) <= {0.0, 1.0}


def test_affine_matches_cv2_warp():
    # Same parameters through albumentations' own matrix and cv2.warpAffine, with and without flip.
    rng = np.random.default_rng(10)
    img, m = rng.integers(0, 256, (101, 101), dtype=np.uint8), _mask()
    daug = dev.build_device_aug('train_128_v2')
    n = 8
    q = daug.sample_params(n, torch.Generator().manual_seed(0), 'cpu')
    q['affine_on'][:] = True
    q['flip'] = torch.arange(n) % 2 == 1
    q['tx'] = torch.tensor([-6., 6, 0, 3, -2, 5, -6, 1])
    q['ty'] = torch.tensor([6., 0, -6, -3, 2, -1, -6, 4])
    q['angle'] = torch.tensor([-10., 10, 3, -7, 9.5, -0.5, 10, -10])
    q['scale'] = torch.tensor([0.9, 1.1, 1.0, 0.95, 1.07, 0.91, 1.1, 0.9])
    q['bc_on'][:] = False
    q['gamma_on'][:] = False
    images, masks = _batch(img, n), _batch(m, n)
    grid = dev.source_grid(*daug._source_coords(q, n, 'cpu'))
    x = F.grid_sample(images.float(), grid, mode='bilinear', padding_mode='border', align_corners=True)
    x = (x + 0.5).floor()[:, 0].numpy()
    t = F.grid_sample(masks.float(), grid, mode='nearest', padding_mode='border', align_corners=True)[:, 0].numpy()
    for i in range(n):
        src, msrc = (img[:, ::-1].copy(), m[:, ::-1].copy()) if q['flip'][i] else (img, m)
        mat = fgeo.create_affine_transformation_matrix(
            {'x': float(q['tx'][i]), 'y': float(q['ty'][i])}, {'x': 0.0, 'y': 0.0},
            {'x': float(q['scale'][i]), 'y': float(q['scale'][i])}, float(q['angle'][i]), fgeo.center((101, 101)))
        want = fgeo.warp_affine(src, mat, cv2.INTER_LINEAR, 0, cv2.BORDER_REFLECT_101, (101, 101))
        want_m = fgeo.warp_affine(msrc, mat, cv2.INTER_NEAREST, 0, cv2.BORDER_REFLECT_101, (101, 101))
        diff = np.abs(want.astype(int) - x[i])
        # Float rounding at exact .5 ties: one grey level, on a handful of pixels.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.002, (i, diff.max(), (diff > 0).mean())
        assert (want_m != t[i]).sum() <= 3, (i, (want_m != t[i]).sum())


def test_brightness_contrast_and_gamma_match_albumentations():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = cv2.resize(levels, (101, 101), interpolation=cv2.INTER_NEAREST)  # every grey level present
    daug = dev.build_device_aug('train_128_v2')
    n = 6
    q = daug.sample_params(n, torch.Generator().manual_seed(0), 'cpu')
    q['flip'][:] = False
    q['affine_on'][:] = False
    q['bc_on'][:] = True
    q['alpha'] = torch.tensor([0.88, 1.12, 1.0, 0.95, 1.07, 1.0])
    q['beta'] = torch.tensor([-30.6, 30.6, 0.0, 12.3, -7.7, 0.0])
    q['gamma_on'] = torch.tensor([False, False, True, True, True, True])
    q['gamma'] = torch.tensor([1.0, 1.0, 0.85, 1.15, 1.0, 1.03], dtype=torch.float64)
    # Stop before the final resize: compare on the 101 grid with an identity val geometry.
    daug._val_image = daug._val_target = lambda v: v
    x01, _ = daug.apply(_batch(img, n), _batch(img > 0, n).to(torch.uint8), q)
    for i in range(n):
        want = A.RandomBrightnessContrast(p=1).apply(img, alpha=float(q['alpha'][i]), beta=float(q['beta'][i]))
        if q['gamma_on'][i]:
            want = fpix.gamma_transform(want, gamma=float(q['gamma'][i]))
        np.testing.assert_array_equal(np.rint(x01[i, 0].numpy() * 255), want, err_msg=str(i))


def test_unknown_name_and_bad_inputs():
    with pytest.raises(UserError, match='train_128_v1'):
        dev.build_device_aug('train_999')
    daug = dev.build_device_aug('train_128_v3')
    g = torch.Generator().manual_seed(0)
    ok_img, ok_t = torch.zeros(2, 1, 101, 101, dtype=torch.uint8), torch.zeros(2, 1, 101, 101, dtype=torch.uint8)
    with pytest.raises(ValueError, match='images'):
        daug(ok_img[..., :100], ok_t, g)
    with pytest.raises(ValueError, match='uint8'):
        daug(ok_img.float(), ok_t, g)
    with pytest.raises(ValueError, match='targets'):
        daug(ok_img, ok_t[:1], g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name', NAMES)
def test_cuda_runs_without_host_sync(name):
    rng = np.random.default_rng(12)
    images = _batch(_realish_image(rng), 64).cuda()
    masks = _batch(_mask(), 64).cuda()
    daug = dev.build_device_aug(name)
    g = torch.Generator(device='cuda').manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        x01, t = daug(images, masks, g)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert x01.is_cuda and t.is_cuda
    # Same parameters on CPU give the same batch (up to float rounding in the interpolation).
    q = daug.sample_params(64, torch.Generator(device='cuda').manual_seed(0), 'cuda')
    xc, tc = daug.apply(images.cpu(), masks.cpu(), {k: v.cpu() for k, v in q.items()})
    assert (xc - x01.cpu()).abs().max() <= 1 / 255 + 1e-6
    assert (tc != t.cpu()).float().mean() < 1e-3
