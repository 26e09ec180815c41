"""Small U-Nets sized for CPU training: residual ``unet_lite`` (128x128) and classic ``unet_plain`` (112x112).

Unlike ImageNet encoders, the stem keeps full resolution (stride-1 conv, no max-pool): a
101-pixel image padded to 128 has thin salt structures that a stride-4 stem would blur.
Compute is kept low instead by few channels at high resolution, stride-2 convs for the four
downsampling stages, and a one-conv decoder step that upsamples by transposed conv and adds
the skip (LinkNet-style) rather than concatenating it. Its throughput on a CPU is in
benchmarks/results.md.

``unet_plain`` is the textbook U-Net at width 16: two conv-bn-relu per level, max-pool down,
transposed-conv up and concatenated skips. It costs more per image than ``unet_lite`` but, on
the real data, learned more per minute of CPU (benchmarks/ablation.md), with 112x112 inputs
(101 reflect-padded to the next multiple of 16) and bf16 autocast where the CPU has AMX.
"""
from __future__ import annotations

from torch import nn

from .common import ConvBnAct, SegNet, init_encoder
from .pretrained import init_encoder_weights


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-bn, ReLU after the sum with the (projected) shortcut.

    x (N, cin, H, W) -> (N, cout, H/stride, W/stride).
    """

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class LiteEncoder(nn.Module):
    """Stride-1 stem then four stride-2 residual stages. Widths w, 2w, 4w, 8w, 16w.

    x (N, 3, H, W) -> [(N, w, H), (N, 2w, H/2), (N, 4w, H/4), (N, 8w, H/8), (N, 16w, H/16)].
    blocks: residual blocks per stage (the first one downsamples).
    """

    strides = (1, 2, 4, 8, 16)

    def __init__(self, width=16, blocks=(1, 1, 1, 1)):
        super().__init__()
        widths = [width * 2 ** i for i in range(5)]
        self.channels = tuple(widths)
        self.stem = ConvBnAct(3, width)
        stages = []
        for cin, cout, n in zip(widths[:-1], widths[1:], blocks):
            stages.append(nn.Sequential(BasicBlock(cin, cout, 2), *[BasicBlock(cout, cout) for _ in range(n - 1)]))
        self.stages = nn.ModuleList(stages)
        init_encoder(self)

    def forward(self, x):
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


def _lite(pretrained, arch, width, scse=False, **heads):
    # scse=False by default: the gates cost speed on CPU; the option is kept for ablations
    enc = LiteEncoder(width)
    init_encoder_weights(enc, pretrained, arch, imagenet=None)
    w = width
    # decoder steps narrower than the encoder stages: the decoder runs at the higher
    # resolutions, so its widths dominate the cost
    return SegNet(enc, (w * 4, w * 2, w, w), scse=scse, n_convs=1, up='deconv', merge='add', top_bn=False,
                  channels_last=True, **heads)


def unet_lite(pretrained=None):
    """Residual U-Net, widths 16..256, full-resolution stem; outputs {'mask'}."""
    return _lite(pretrained, 'unet_lite', 16)


def unet_lite_w32(pretrained=None):
    """``unet_lite`` at double width (32..512); outputs {'mask'}."""
    return _lite(pretrained, 'unet_lite_w32', 32)


def unet_lite_ds(pretrained=None):
    """``unet_lite`` with hypercolumn, deep supervision and salt head; outputs {'mask', 'aux', 'salt'}."""
    # the hypercolumn cuts each step to 8 channels before upsampling and mixes them with a 1x1
    # conv: a 3x3 over all decoder channels at full resolution would cost more than the encoder
    return _lite(pretrained, 'unet_lite_ds', 16, hypercolumn=True, hyper_channels=16, hyper_reduce=8,
                 hyper_kernel=1, aux=True, salt=True, fuse_salt=True)


def unet_lite_border(pretrained=None):
    """``unet_lite`` with a second head for the mask's border; outputs {'mask', 'border'}."""
    return _lite(pretrained, 'unet_lite_border', 16, border=True)


class PlainEncoder(nn.Module):
    """Classic U-Net encoder: two 3x3 conv-bn-relu per level, 2x2 max-pool between levels.

    The first level runs at the input's resolution (stride 1: no downsampling stem).
    x (N, 3, H, W) -> [(N, w, H), (N, 2w, H/2), (N, 4w, H/4), (N, 8w, H/8), (N, 16w, H/16)].
    dilated_last: the deepest level is not pooled but its convs are dilated (2), so it stays at
    H/8 with about the receptive field the pool gave it: [..., (N, 8w, H/8), (N, 16w, H/8)].
    """

    def __init__(self, width=16, dilated_last=False):
        super().__init__()
        widths = [width * 2 ** i for i in range(5)]
        self.channels = tuple(widths)
        self.strides = (1, 2, 4, 8, 8) if dilated_last else (1, 2, 4, 8, 16)
        cins = [3] + widths[:-1]
        dil = [1, 1, 1, 1, 2 if dilated_last else 1]
        self.levels = nn.ModuleList(nn.Sequential(ConvBnAct(ci, co, dilation=d), ConvBnAct(co, co, dilation=d))
                                    for ci, co, d in zip(cins, widths, dil))
        self.pool = nn.MaxPool2d(2)
        self.pooled = [False] + [s > p for p, s in zip(self.strides, self.strides[1:])]
        init_encoder(self)

    def forward(self, x):
        feats = [self.levels[0](x)]
        for level, pooled in zip(self.levels[1:], self.pooled[1:]):
            feats.append(level(self.pool(feats[-1]) if pooled else feats[-1]))
        return feats


def _plain(pretrained, arch, width, dilated_last=False, **heads):
    enc = PlainEncoder(width, dilated_last)
    init_encoder_weights(enc, pretrained, arch, imagenet=None)
    w = width
    return SegNet(enc, (w * 8, w * 4, w * 2, w), n_convs=2, up='deconv', merge='cat', channels_last=True, **heads)


def unet_plain(pretrained=None):
    """Classic U-Net (Ronneberger et al.): two convs per level, max-pool, concatenated skips; widths 16..256.

    Slower per image than ``unet_lite`` but learns more per image seen; sized for 112x112 inputs
    (``train_112_v3``). Outputs {'mask'}.
    """
    return _plain(pretrained, 'unet_plain', 16)


def unet_plain_w8(pretrained=None):
    """``unet_plain`` at half width (8..128): cheaper per image, more epochs per minute. Outputs {'mask'}."""
    return _plain(pretrained, 'unet_plain_w8', 8)


def unet_plain_scse(pretrained=None):
    """``unet_plain`` with scSE gates after every decoder step. Outputs {'mask'}."""
    return _plain(pretrained, 'unet_plain_scse', 16, scse=True)


def unet_plain_hyper(pretrained=None):
    """``unet_plain`` whose mask head reads a hypercolumn of every decoder scale. Outputs {'mask'}."""
    return _plain(pretrained, 'unet_plain_hyper', 16, hypercolumn=True, hyper_channels=16, hyper_reduce=8,
                  hyper_kernel=1)


def unet_plain_ds(pretrained=None):
    """``unet_plain`` with deep supervision and a salt/no-salt head fused into the mask head.

    Outputs {'mask', 'aux', 'salt'}; train it with the ``combined`` loss.
    """
    return _plain(pretrained, 'unet_plain_ds', 16, aux=True, salt=True, fuse_salt=True)


def unet_plain_ds_w32(pretrained=None):
    """``unet_plain_ds`` at double width (32..512), for GPU budgets. Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_w32', 32, aux=True, salt=True, fuse_salt=True)


def unet_plain_ds_w8(pretrained=None):
    """``unet_plain_ds`` at half width (8..128): the same heads, for screening on slow CPUs. Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_w8', 8, aux=True, salt=True, fuse_salt=True)


# The recipe's net (unet_plain_ds) with one change each, for ablations; the _w8 twins screen them on slow CPUs.
_DS = dict(aux=True, salt=True, fuse_salt=True)
# as unet_plain_hyper: each step cut to 8 channels, then a 1x1 conv, which is also the salt fusion
_HYPER = dict(hypercolumn=True, hyper_channels=16, hyper_reduce=8, hyper_kernel=1)


def unet_plain_ds_scse(pretrained=None):
    """``unet_plain_ds`` with scSE gates after every decoder step. Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_scse', 16, scse=True, **_DS)


def unet_plain_ds_scse_w8(pretrained=None):
    """``unet_plain_ds_scse`` at half width (8..128). Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_scse_w8', 8, scse=True, **_DS)


def unet_plain_ds_hyper(pretrained=None):
    """``unet_plain_ds`` whose mask head reads a hypercolumn of every decoder step; the salt features are
    fused in the hypercolumn's conv. Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_hyper', 16, **_HYPER, **_DS)


def unet_plain_ds_hyper_w8(pretrained=None):
    """``unet_plain_ds_hyper`` at half width (8..128). Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_hyper_w8', 8, **_HYPER, **_DS)


def unet_plain_ds_dil(pretrained=None):
    """``unet_plain_ds`` with three stride-2 stages: the deepest level is dilated (2) at stride 8 instead of
    pooled to 16, keeping twice the resolution there (inputs a multiple of 8). Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_dil', 16, dilated_last=True, **_DS)


def unet_plain_ds_dil_w8(pretrained=None):
    """``unet_plain_ds_dil`` at half width (8..128). Outputs {'mask', 'aux', 'salt'}."""
    return _plain(pretrained, 'unet_plain_ds_dil_w8', 8, dilated_last=True, **_DS)
