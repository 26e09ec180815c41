import cv2
import numpy as np
import pytest
import torch

from net import augmentations as aug
from net import geometry
from utils.data import border_of
from utils.errors import UserError

N_DRAWS = 60


def _mask():
    # Asymmetric on purpose: a flip, transpose or off-by-one shift changes it.
    m = np.zeros((101, 101), np.uint8)
    cv2.circle(m, (40, 62), 24, 1, -1)
    m[6:30, 60:100] = 1
    m[0:20, 0:8] = 1  # touches the frame
    return m


def _encoding_image(mask, rng):
    # Intensity encodes the mask; noise keeps it from being piecewise constant.
    noise = rng.integers(-8, 9, mask.shape)
    return np.clip(np.where(mask > 0, 200, 50) + noise, 0, 255).astype(np.uint8)


def _realish_image(rng):
    yy, xx = np.mgrid[:101, :101]
    img = 60 + 1.2 * yy + 0.4 * xx + rng.normal(0, 12, (101, 101))
    return np.clip(img, 0, 255).astype(np.uint8)


def _to_tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).float()[None, None]


SIZES = {name: g.size for name, g in geometry.PRESETS.items()}


def test_registries_are_complete():
    assert set(geometry.PRESETS) == {'train_128_v1', 'train_128_v2', 'train_128_v3', 'train_256_v1', 'train_112_v3'}
    assert set(aug.VAL_AUGS) == {'val_128', 'val_128_resize', 'val_256', 'val_112'}
    assert set(aug.BACK_TRANSFORMS) == {'crop_from_128', 'resize_from_any', 'crop_resize_from_256', 'crop_from_112'}
    # Every validation input and back-transform belongs to a preset.
    assert {g.val for g in geometry.PRESETS.values()} == set(aug.VAL_AUGS)
    assert {g.back for g in geometry.PRESETS.values()} == set(aug.BACK_TRANSFORMS)


@pytest.mark.parametrize('name', sorted(geometry.PRESETS))
def test_train_aug_shapes_and_dtypes(name):
    rng = np.random.default_rng(1)
    img, m = _realish_image(rng), _mask()
    t = geometry.build_train_aug(name, seed=0)
    s = SIZES[name]
    for _ in range(10):
        out = t(image=img, mask=m)
        assert out['image'].shape == (s, s) and out['image'].dtype == np.uint8
        assert out['mask'].shape == (s, s) and out['mask'].dtype == np.uint8
        assert set(np.unique(out['mask'])) <= {0, 1}


@pytest.mark.parametrize('name', sorted(geometry.PRESETS))
def test_train_aug_keeps_image_and_mask_aligned(name):
    rng = np.random.default_rng(2)
    m = _mask()
    img = _encoding_image(m, rng)
    t = geometry.build_train_aug(name, seed=3)
    agreements = []
    for _ in range(N_DRAWS):
        out = t(image=img, mask=m)
        # Otsu follows the two intensity levels whatever the photometric ops did to them.
        _, th = cv2.threshold(out['image'], 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        agreements.append((th == out['mask']).mean())
        assert set(np.unique(out['mask'])) <= {0, 1}
    assert min(agreements) >= 0.98, (name, min(agreements))


@pytest.mark.parametrize('name', sorted(geometry.PRESETS))
def test_extra_masks_follow_the_same_geometry(name):
    rng = np.random.default_rng(4)
    m = _mask()
    img = _encoding_image(m, rng)
    border = border_of(m)
    one = geometry.build_train_aug(name, seed=5)
    two = geometry.build_train_aug(name, seed=5)
    for _ in range(10):
        a = one(image=img, mask=m)
        b = two(image=img, masks=[m, border])
        np.testing.assert_array_equal(a['image'], b['image'])
        np.testing.assert_array_equal(a['mask'], b['masks'][0])
        assert b['masks'][1].shape == a['mask'].shape
        assert set(np.unique(b['masks'][1])) <= {0, 1}


def test_seeded_draws_are_reproducible_and_vary():
    rng = np.random.default_rng(6)
    img, m = _realish_image(rng), _mask()
    a = geometry.build_train_aug('train_128_v2', seed=7)
    b = geometry.build_train_aug('train_128_v2', seed=7)
    outs_a = [a(image=img, mask=m)['image'] for _ in range(5)]
    outs_b = [b(image=img, mask=m)['image'] for _ in range(5)]
    for x, y in zip(outs_a, outs_b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(outs_a[0], o) for o in outs_a[1:])


def test_seeded_decisions_are_not_correlated():
    # With one generator per transform all seeded alike, flip and brightness would always co-occur.
    rng = np.random.default_rng(8)
    img = _realish_image(rng)
    t = geometry.build_train_aug('train_128_v1', seed=9)
    ref = geometry.build_train_aug('train_128_v1', p=0)(image=img)['image'].astype(int)
    seen = set()
    for _ in range(80):
        out = t(image=img)['image'].astype(int)
        flipped = np.abs(out - ref[:, ::-1]).mean() < np.abs(out - ref).mean()
        geo = ref[:, ::-1] if flipped else ref
        photometric = not np.array_equal(out, geo)
        seen.add((bool(flipped), photometric))
    assert len(seen) == 4, seen


@pytest.mark.parametrize('name', sorted(geometry.PRESETS))
def test_train_geometry_equals_paired_val_aug(name):
    rng = np.random.default_rng(10)
    img, m = _realish_image(rng), _mask()
    val = aug.VAL_AUGS[geometry.PRESETS[name].val]
    out = geometry.build_train_aug(name, p=0)(image=img, mask=m)
    want_img = val(_to_tensor(img))[0, 0].numpy()
    want_mask = val(_to_tensor(m))[0, 0].numpy() > 0.5
    if geometry.PRESETS[name].val in ('val_128', 'val_112'):
        np.testing.assert_array_equal(out['image'], want_img)
        np.testing.assert_array_equal(out['mask'], want_mask)
    else:
        # cv2 works in uint8 fixed point, torch in float: at most one grey level apart.
        assert np.abs(out['image'] - want_img).max() <= 1.0
        assert (out['mask'] == want_mask).mean() > 0.995


@pytest.mark.parametrize('name', sorted(aug.VAL_AUGS))
def test_val_aug_shapes(name):
    x = torch.rand(3, 2, 101, 101)
    y = aug.build_val_aug(name)(x)
    s = geometry.of_val(name).size
    assert y.shape == (3, 2, s, s) and y.dtype == x.dtype
    back = aug.build_back_transform(geometry.of_val(name).back)(y)
    assert back.shape == x.shape


def test_val_aug_rejects_wrong_size():
    with pytest.raises(ValueError):
        aug.val_128(torch.rand(1, 1, 100, 100))
    with pytest.raises(ValueError):
        aug.crop_from_128(torch.rand(1, 1, 101, 101))


def test_val_128_places_tile_at_13():
    x = torch.rand(2, 1, 101, 101)
    y = aug.val_128(x)
    assert torch.equal(y[..., 13:114, 13:114], x)
    # reflect-101: the row above the tile mirrors row 1, not row 0.
    assert torch.equal(y[..., 12, 13:114], x[..., 1, :])
    assert torch.equal(y[..., 114, 13:114], x[..., 99, :])


def test_pad_round_trip_is_exact():
    x = torch.rand(4, 3, 101, 101)
    assert torch.equal(aug.crop_from_128(aug.val_128(x)), x)


def _smooth():
    yy, xx = torch.meshgrid(torch.arange(101.), torch.arange(101.), indexing='ij')
    return (0.5 + 0.3 * torch.sin(xx / 9) * torch.cos(yy / 13) + 0.1 * yy / 101)[None, None]


def _iou(a, b):
    return (a & b).sum().item() / max((a | b).sum().item(), 1)


@pytest.mark.parametrize('name', ['val_128_resize', 'val_256'])
def test_resize_round_trips(name):
    fwd, back = aug.VAL_AUGS[name], aug.BACK_TRANSFORMS[geometry.of_val(name).back]
    x = _smooth()
    assert (back(fwd(x)) - x).abs().max() < 0.02
    m = torch.from_numpy(_mask()).bool()
    rt = back(fwd(m.float()[None, None]))[0, 0] > 0.5
    assert _iou(rt, m) > 0.97


def test_back_transforms_on_probabilities_stay_in_range():
    p = torch.rand(2, 1, 256, 256)
    for fn in (aug.crop_resize_from_256, aug.resize_from_any):
        q = fn(p)
        assert q.shape == (2, 1, 101, 101) and q.min() >= 0 and q.max() <= 1


def test_border_of_empty_and_full():
    assert border_of(np.zeros((101, 101), np.uint8)).sum() == 0
    assert border_of(np.ones((101, 101), np.uint8)).sum() == 0


def test_border_of_edge_touching_mask_has_no_band_along_frame():
    m = np.zeros((101, 101), np.uint8)
    m[:, :40] = 1
    b = border_of(m)
    assert b.dtype == np.uint8 and b.shape == m.shape
    want = np.zeros_like(m)
    want[:, 39:41] = 1  # one pixel inside, one outside the salt edge, nothing along row 0/100 or col 0
    np.testing.assert_array_equal(b, want)


def test_border_of_interior_square():
    m = np.zeros((101, 101), np.uint8)
    m[30:60, 30:60] = 1
    b = border_of(m)
    ring = np.zeros_like(m)
    ring[29:61, 29:61] = 1
    ring[31:59, 31:59] = 0
    np.testing.assert_array_equal(b, ring)
    # width 3: two pixels on the salt side, one outside.
    b3 = border_of(m * 255, width=3)
    ring3 = np.zeros_like(m)
    ring3[29:61, 29:61] = 1
    ring3[32:58, 32:58] = 0
    np.testing.assert_array_equal(b3, ring3)


def test_border_of_accepts_bool_and_rejects_bad_args():
    m = _mask()
    np.testing.assert_array_equal(border_of(m.astype(bool)), border_of(m))
    assert set(np.unique(border_of(m))) == {0, 1}
    with pytest.raises(ValueError):
        border_of(m, width=0)
    with pytest.raises(ValueError):
        border_of(m[None])


@pytest.mark.parametrize('build', [geometry.build_train_aug, aug.build_val_aug, aug.build_back_transform])
def test_unknown_names_raise_user_error(build):
    with pytest.raises(UserError, match='choose one of'):
        build('no_such_thing')


class _Tiles(torch.utils.data.Dataset):
    def __init__(self, seed):
        self.aug = geometry.build_train_aug('train_128_v2', seed=seed)
        self.img = np.tile(np.arange(0, 202, 2, dtype=np.uint8), (101, 1))

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.from_numpy(self.aug(image=self.img)['image'].astype(np.float32))


def _worker_batches(seed):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_Tiles(seed), batch_size=2, num_workers=2)
    return list(loader)


@pytest.mark.parametrize('seed', [None, 11])
def test_dataloader_workers_draw_different_augmentations(seed):
    # Each worker gets one batch; a Compose copied into both workers unchanged would repeat itself.
    first, second = _worker_batches(seed)
    assert not torch.equal(first, second)


def test_dataloader_workers_are_reproducible_under_manual_seed():
    a, b = _worker_batches(11), _worker_batches(11)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
