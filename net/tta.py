"""Test-time augmentation as exactly invertible (forward, inverse) pairs on (N, C, H, W) tensors.

The predictor applies ``forward`` to the batch (after the val aug, at model input resolution), runs the
model, applies ``inverse`` to its output and averages over the pairs. Every inverse undoes its forward
bit for bit, so averaging never blurs the geometry; the model output must have the input's H and W.

Only horizontal flips and small shifts: seismic sections are not vertically symmetric (salt bodies and
layering have an up/down direction), so vertical flips and rotations would show the model images
unlike the training data.
"""
from utils.errors import lookup


def identity(x):
    """(N,C,H,W) -> the same tensor."""
    return x


def hflip(x):
    """Mirror left-right: (N,C,H,W) -> (N,C,H,W); its own inverse."""
    return x.flip(-1)


def _shift_px(x, dim):
    # 1/16 of the side: 8 px at 128, 16 px at 256, inside the reflect frames of val_128 (13 px) and
    # val_256 (27 px), so the rows that wrap around are padding, not tile content.
    return max(1, x.shape[dim] // 16)


def _roll(sign, dim):
    def fn(x):
        return x.roll(sign * _shift_px(x, dim), dims=dim)
    return fn


def _pair(sign, dim):
    # torch.roll is a permutation, so rolling back by the same amount restores every element exactly.
    return _roll(sign, dim), _roll(-sign, dim)


TTAS = {
    'null': [(identity, identity)],
    'null_hflip': [(identity, identity), (hflip, hflip)],
    # Vertical shifts by +-H/16 with wrap-around; best with the pad-based val augs (val_128, val_256),
    # where the wrapped rows are reflect padding. With val_128_resize they are real tile rows.
    'hflip_vshift': [(identity, identity), (hflip, hflip), _pair(1, -2), _pair(-1, -2)],
    # Also +-W/16 horizontal shifts: 6 passes.
    'hflip_hvshift': [(identity, identity), (hflip, hflip), _pair(1, -2), _pair(-1, -2),
                      _pair(1, -1), _pair(-1, -1)],
}


def build_tta(name):
    """The list of (forward, inverse) pairs named ``name``; each maps (N,C,H,W) -> (N,C,H,W)."""
    return lookup(TTAS, name, 'TTA')
