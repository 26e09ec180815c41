"""Batched tensor versions of the train augmentations, for a training fold that sits on the GPU.

Each set in ``DEVICE_AUGS`` stands for the albumentations Compose of the same name (the
``device`` and ``train`` of a preset in ``net.geometry``): same ops, same order, same probabilities and parameter ranges, each
op decided per sample. The whole batch goes through one code path on the device (GPU or CPU tensors
alike): the random numbers are one ``torch.rand`` draw from the caller's generator, flips, shifts and
affine warps together are one ``grid_sample`` over per-sample source coordinates, and nothing waits on
the host (no .item(), no boolean indexing: not-drawn samples are kept by ``torch.where``).

The image is kept on albumentations' uint8 grid (0..255, integer-valued) until the final geometry,
so the photometric ops see the same values they would see in the numpy pipeline; the final geometry is
the paired validation transform applied to ``image / 255``. With ``p=0`` the output therefore equals
the validation input exactly.
"""
import torch
import torch.nn.functional as F

from net import augmentations as aug
from utils.errors import lookup

SRC = aug.SRC
CENTRE = SRC / 2 - 0.5  # albumentations' affine centre (pixel centres at integers)

# Columns of the per-sample uniforms, all drawn by one torch.rand call.
(U_FLIP, U_GEO, U_X, U_Y, U_SCALE, U_ANGLE,
 U_BC, U_ALPHA, U_BETA, U_GAMMA_ON, U_GAMMA, N_UNIFORMS) = range(12)


def _resize_nearest(side):
    # 'nearest-exact' samples at half-pixel centres, as cv2.INTER_NEAREST_EXACT does in the train sets.
    return lambda t: F.interpolate(t, size=(side, side), mode='nearest-exact')


# How each validation geometry places the targets (float (B,K,101,101) -> (B,K,S,S)): pads are the
# same reflect-101 pads as for the image, resizes are nearest instead of bilinear.
_TARGET_GEOMETRY = {
    'val_128': aug.val_128,
    'val_112': aug.val_112,
    'val_128_resize': _resize_nearest(128),
    'val_256': lambda t: F.pad(_resize_nearest(aug.MID_256)(t), (aug.PAD_256,) * 4, mode='reflect'),
}


def reflect101(coord, n):
    """Fold coordinates (float tensor, any shape, any range) into [0, n-1] like cv2.BORDER_REFLECT_101.

    Mirroring is about the first and last pixel centres (..., 2, 1, 0, 1, 2, ...). Because those are
    sample positions, linearly interpolating the reflect-101 extension at x equals interpolating the
    tile at the folded x, so folding the coordinates once gives cv2's border handling for bilinear and
    nearest alike (nearest can differ only at exact half-pixel ties).
    """
    period = 2 * (n - 1)
    r = torch.remainder(coord, period)
    return (n - 1) - ((n - 1) - r).abs()


def source_grid(sx, sy, size=SRC):
    """grid_sample grid (B,H,W,2) for align_corners=True that reads a (size x size) tile at sx, sy.

    sx, sy float (B,H,W): source column and row of every output pixel, in pixels with centres at
    integers; any range, folded reflect-101 first. grid_sample's own 'reflection' padding mirrors about
    the outer pixel edges (cv2.BORDER_REFLECT), half a pixel off reflect-101; after the fold, 'border'
    padding only absorbs float fuzz at the last pixel centre.
    """
    scale = 2.0 / (size - 1)
    return torch.stack([reflect101(sx, size) * scale - 1, reflect101(sy, size) * scale - 1], -1)


class DeviceAug:
    """One train augmentation set as batched tensor ops; see ``build_device_aug``.

    Probabilities are absolute (already scaled by the factory's ``p``). ``shift`` (max integer shift on
    reflect-101 padding) and ``affine`` (A.Affine of net.augmentations._affine) exclude each other, as in
    the sets; ``bc`` is (brightness_limit, contrast_limit); ``gamma`` is gamma_limit in percent.
    """

    def __init__(self, val_name, p_flip=0.5, shift=None, p_shift=0.0, affine=False, p_affine=0.0,
                 bc=(0.1, 0.1), p_bc=0.5, gamma=None, p_gamma=0.0,
                 scale=(0.9, 1.1), rotate=(-10.0, 10.0), translate=(-0.06, 0.06)):
        if shift is not None and affine:
            raise ValueError("a set has either an integer shift or an affine warp, not both")
        self.val_name = val_name
        self._val_image = aug.build_val_aug(val_name)
        self.out_size = self._val_image(torch.zeros(1, 1, SRC, SRC)).shape[-1]
        self._val_target = _TARGET_GEOMETRY[val_name]
        self.p_flip = p_flip
        self.shift, self.p_shift = shift, p_shift
        self.affine, self.p_affine = affine, p_affine
        self.scale, self.rotate, self.translate = scale, rotate, translate
        self.bc, self.p_bc = bc, p_bc
        self.gamma, self.p_gamma = gamma, p_gamma

    def sample_params(self, batch, generator, device):
        """Per-sample parameters (dict of (B,) tensors on ``device``), drawn as albumentations draws them.

        Every draw comes from one ``torch.rand(B, N_UNIFORMS)`` on ``generator``: the generator advances
        by the same amount for every set, and the same state gives the same batch.
        """
        u = torch.rand(batch, N_UNIFORMS, generator=generator, device=device)
        q = {'flip': u[:, U_FLIP] < self.p_flip}
        if self.shift is not None:
            # RandomCrop(101) of a tile padded by `shift`: offset int((2*shift + 1) * U) - shift.
            q['shift_on'] = u[:, U_GEO] < self.p_shift
            q['dx'] = (u[:, U_X] * (2 * self.shift + 1)).floor() - self.shift
            q['dy'] = (u[:, U_Y] * (2 * self.shift + 1)).floor() - self.shift
        if self.affine:
            q['affine_on'] = u[:, U_GEO] < self.p_affine
            lo, hi = self.translate
            # albumentations truncates the translation to whole pixels: int(percent * side).
            q['tx'] = ((lo + (hi - lo) * u[:, U_X]) * SRC).trunc()
            q['ty'] = ((lo + (hi - lo) * u[:, U_Y]) * SRC).trunc()
            q['scale'] = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, U_SCALE]
            q['angle'] = self.rotate[0] + (self.rotate[1] - self.rotate[0]) * u[:, U_ANGLE]
        if self.bc is not None:
            b, c = self.bc
            q['bc_on'] = u[:, U_BC] < self.p_bc
            q['alpha'] = 1 + c * (2 * u[:, U_ALPHA] - 1)
            q['beta'] = 255 * b * (2 * u[:, U_BETA] - 1)  # brightness_by_max: beta in units of 255
        if self.gamma is not None:
            lo, hi = self.gamma
            q['gamma_on'] = u[:, U_GAMMA_ON] < self.p_gamma
            q['gamma'] = (lo + (hi - lo) * u[:, U_GAMMA].double()) / 100
        return q

    def _source_coords(self, q, batch, device):
        # Source position of every output pixel at 101x101, composing flip then shift/affine, so that a
        # single resampling does all the geometry. Not-drawn samples get the identity (exact copies).
        # Row and column terms stay (B,1,W) / (B,H,1) until the one broadcast that makes them (B,H,W).
        ar = torch.arange(SRC, device=device, dtype=torch.float32)
        col, row = ar.expand(batch, 1, SRC), ar[:, None].expand(batch, SRC, 1)
        if self.shift is not None:
            on = q['shift_on'][:, None, None]
            col = torch.where(on, col + q['dx'][:, None, None], col)
            row = torch.where(on, row + q['dy'][:, None, None], row)
        sx, sy = col.expand(batch, SRC, SRC), row.expand(batch, SRC, SRC)
        if self.affine:
            # A.Affine maps source to output by centre + T + R(angle) * scale * (p - centre), R = [[c, s],
            # [-s, c]]; cv2.warpAffine samples the source at the inverse of that for each output pixel.
            rad = torch.deg2rad(q['angle'])[:, None, None]
            inv_s = 1 / q['scale'][:, None, None]
            cos, sin = rad.cos() * inv_s, rad.sin() * inv_s
            ox = col - CENTRE - q['tx'][:, None, None]  # (B,1,W)
            oy = row - CENTRE - q['ty'][:, None, None]  # (B,H,1)
            ax = (CENTRE + cos * ox) - sin * oy
            ay = (CENTRE + sin * ox) + cos * oy
            on = q['affine_on'][:, None, None]
            sx, sy = torch.where(on, ax, sx), torch.where(on, ay, sy)
        # The flip comes first in every set: sampling the flipped tile at x is sampling the tile at
        # 100 - x, and reflect-101 borders are symmetric, so the flip folds into the coordinates.
        sx = torch.where(q['flip'][:, None, None], (SRC - 1) - sx, sx)
        return sx, sy

    def apply(self, images, targets, q):
        """Augment with given parameters ``q`` (from ``sample_params``); see ``__call__`` for shapes."""
        _check(images, targets)
        batch, device = images.shape[0], images.device
        sx, sy = self._source_coords(q, batch, device)
        grid = source_grid(sx, sy)
        x = F.grid_sample(images.float(), grid, mode='bilinear', padding_mode='border', align_corners=True)
        t = F.grid_sample(targets.float(), grid, mode='nearest', padding_mode='border', align_corners=True)
        # Back to the uint8 grid, as cv2 rounds the warped image; this also removes the ~1e-5 px
        # normalisation fuzz of grid_sample, so integer positions (flips, shifts) copy pixels exactly.
        x = (x + 0.5).floor()
        if self.bc is not None:
            # albumentations 2.0.8 on uint8: a LUT of clip(v * alpha + beta, 0, 255) cast to uint8
            # (truncation). Contrast scales about 0, not about the mean as its docstring says.
            y = (x * q['alpha'][:, None, None, None] + q['beta'][:, None, None, None]).clamp(0, 255).floor()
            x = torch.where(q['bc_on'][:, None, None, None], y, x)
        if self.gamma is not None:
            # Per-sample version of albumentations' float64 LUT floor(255 * (v / 255) ** gamma); float64
            # so that values landing on a whole grey level truncate the same way (CUDA and CPU have it).
            levels = torch.arange(256, device=device, dtype=torch.float64) * (1.0 / 255)
            lut = (levels ** q['gamma'][:, None] * 255).floor().float()  # (B, 256)
            y = lut.gather(1, x.reshape(batch, -1).long()).reshape(x.shape)
            x = torch.where(q['gamma_on'][:, None, None, None], y, x)
        return self._val_image(x / 255.0), self._val_target(t.float())

    def __call__(self, images, targets, generator):
        """Augment a batch.

        images uint8 (B,1,101,101); targets uint8 (B,K,101,101) in {0,1} (K=1 mask, K=2 mask+border);
        generator: a torch.Generator on the tensors' device. Returns (x01 float32 (B,1,S,S) in [0,1],
        t float32 (B,K,S,S) in {0,1}) with S = ``out_size``.
        """
        return self.apply(images, targets, self.sample_params(images.shape[0], generator, images.device))

    def __repr__(self):
        return f"DeviceAug({self.val_name}, out_size={self.out_size})"


def _check(images, targets):
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[-2:] != (SRC, SRC):
        raise ValueError(f"images must be (B, 1, {SRC}, {SRC}), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    if targets.dim() != 4 or targets.shape[0] != images.shape[0] or targets.shape[-2:] != (SRC, SRC):
        raise ValueError(f"targets must be (B, K, {SRC}, {SRC}) with B = {images.shape[0]}, "
                         f"got {tuple(targets.shape)}")
    if images.device != targets.device:
        raise ValueError(f"images on {images.device} but targets on {targets.device}")


def train_128_v1(p=1.0):
    """Device twin of augmentations.train_128_v1: hflip, b/c 0.08, resize -> (B,*,128,128)."""
    return DeviceAug('val_128_resize', p_flip=0.5 * p, bc=(0.08, 0.08), p_bc=0.5 * p)


def train_128_v2(p=1.0):
    """Device twin of augmentations.train_128_v2: hflip, affine, b/c 0.12, gamma 85-115, resize -> 128."""
    return DeviceAug('val_128_resize', p_flip=0.5 * p, affine=True, p_affine=0.75 * p,
                     bc=(0.12, 0.12), p_bc=0.5 * p, gamma=(85, 115), p_gamma=0.3 * p)


def train_128_v3(p=1.0):
    """Device twin of augmentations.train_128_v3: hflip, shift <= 10 px, b/c 0.1, reflect pad -> 128."""
    return DeviceAug('val_128', p_flip=0.5 * p, shift=aug.SHIFT_V3, p_shift=0.5 * p,
                     bc=(0.1, 0.1), p_bc=0.5 * p)


def train_112_v3(p=1.0):
    """Device twin of augmentations.train_112_v3: as train_128_v3 with reflect pad -> 112."""
    return DeviceAug('val_112', p_flip=0.5 * p, shift=aug.SHIFT_V3, p_shift=0.5 * p,
                     bc=(0.1, 0.1), p_bc=0.5 * p)


def train_256_v1(p=1.0):
    """Device twin of augmentations.train_256_v1: hflip, affine, b/c 0.1, resize 202 + pad 27 -> 256."""
    return DeviceAug('val_256', p_flip=0.5 * p, affine=True, p_affine=0.5 * p,
                     bc=(0.1, 0.1), p_bc=0.5 * p)


DEVICE_AUGS = {
    'train_128_v1': train_128_v1,
    'train_128_v2': train_128_v2,
    'train_128_v3': train_128_v3,
    'train_256_v1': train_256_v1,
    'train_112_v3': train_112_v3,
}


def build_device_aug(name, p=1.0):
    """The batched twin of train augmentation ``name`` (a DeviceAug); ``p`` scales every probability."""
    return lookup(DEVICE_AUGS, name, 'train augmentation')(p=p)
