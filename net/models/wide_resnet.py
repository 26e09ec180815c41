"""TernausNetV2-style U-Nets over a WiderResNet-38 encoder.

The encoder follows the WiderResNet-38 ("A2") of the In-Place Activated BatchNorm paper
(Rota Bulo et al. 2018): pre-activation residual blocks, a 3x3/64 stem, six modules with
[3, 3, 6, 3, 1, 1] blocks, the last two bottlenecks. InPlaceABN is replaced by BatchNorm
followed by leaky ReLU(0.01) in a BatchNorm2d subclass, so parameter names match that
checkpoint layout (mod1..mod7, bn_out; after dropping its 'module.' prefix and classifier).
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from .common import SegNet, init_encoder
from .pretrained import init_encoder_weights

WIDE_BLOCKS = (3, 3, 6, 3, 1, 1)
WIDE_CHANNELS = ((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096))


class BNAct(nn.BatchNorm2d):
    """BatchNorm2d then leaky ReLU(0.01), the activated-BN unit of the paper. (N, C, H, W) -> same."""

    def __init__(self, channels, slope=0.01):
        super().__init__(channels)
        self.slope = slope

    def forward(self, x):
        # in-place is safe: BN's backward needs its input, not its output
        return F.leaky_relu(super().forward(x), self.slope, inplace=True)


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-act first, shortcut projected when shape changes.

    channels: (c1, c2) for two 3x3 convs, or (c1, c2, c3) for a 1x1-3x3-1x1 bottleneck.
    x (N, cin, H, W) -> (N, channels[-1], H/stride, W/stride).
    """

    def __init__(self, cin, channels, stride=1, dropout=0.0):
        super().__init__()
        self.bn1 = BNAct(cin)
        if len(channels) == 2:
            layers = [('conv1', nn.Conv2d(cin, channels[0], 3, stride, 1, bias=False)),
                      ('bn2', BNAct(channels[0])),
                      ('conv2', nn.Conv2d(channels[0], channels[1], 3, 1, 1, bias=False))]
        else:
            layers = [('conv1', nn.Conv2d(cin, channels[0], 1, stride, 0, bias=False)),
                      ('bn2', BNAct(channels[0])),
                      ('conv2', nn.Conv2d(channels[0], channels[1], 3, 1, 1, bias=False)),
                      ('bn3', BNAct(channels[1])),
                      ('conv3', nn.Conv2d(channels[1], channels[2], 1, 1, 0, bias=False))]
        if dropout:
            # the original regularises its widest modules right before the last conv
            layers.insert(len(layers) - 1, ('dropout', nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or cin != channels[-1]:
            self.proj_conv = nn.Conv2d(cin, channels[-1], 1, stride, 0, bias=False)
        else:
            self.proj_conv = None

    def forward(self, x):
        act = self.bn1(x)
        # a projection sees the activated input; an identity shortcut carries the raw sum
        shortcut = self.proj_conv(act) if self.proj_conv is not None else x
        return self.convs(act) + shortcut


class WiderResNet38Encoder(nn.Module):
    """WiderResNet-38 feature extractor. x (N, 3, H, W) -> six maps, finest first:

    mod1 (64, H), mod2 (128, H/2), mod3 (256, H/4), mod4 (512, H/8), mod5 (1024, H/16),
    bn_out(mod7) (4096, H/32). mod6 (2048, H/32) only feeds mod7, at the same stride.
    """

    channels = (64, 128, 256, 512, 1024, 4096)
    strides = (1, 2, 4, 8, 16, 32)

    def __init__(self, dropout=True):
        super().__init__()
        self.mod1 = nn.Sequential(OrderedDict([('conv1', nn.Conv2d(3, 64, 3, 1, 1, bias=False))]))
        cin = 64
        for i, (n, chans) in enumerate(zip(WIDE_BLOCKS, WIDE_CHANNELS)):
            mod = i + 2
            if mod in (2, 3):
                self.add_module(f'pool{mod}', nn.MaxPool2d(3, stride=2, padding=1))
            drop = {6: 0.3, 7: 0.5}.get(mod, 0.0) if dropout else 0.0
            blocks = []
            for b in range(n):
                stride = 2 if b == 0 and mod in (4, 5, 6) else 1
                blocks.append((f'block{b + 1}', PreActBlock(cin, chans, stride, drop)))
                cin = chans[-1]
            self.add_module(f'mod{mod}', nn.Sequential(OrderedDict(blocks)))
        self.bn_out = BNAct(cin)
        init_encoder(self)

    def forward(self, x):
        x1 = self.mod1(x)
        x2 = self.mod2(self.pool2(x1))
        x3 = self.mod3(self.pool3(x2))
        x4 = self.mod4(x3)
        x5 = self.mod5(x4)
        x7 = self.bn_out(self.mod7(self.mod6(x5)))
        return [x1, x2, x3, x4, x5, x7]


def _wide_unet(pretrained, arch, filters=32, **heads):
    enc = WiderResNet38Encoder()
    init_encoder_weights(enc, pretrained, arch, imagenet=None)
    f = filters
    # a 1x1 cut from 4096 channels keeps the first decoder step cheap
    return SegNet(enc, (f * 8, f * 4, f * 2, f, f), center=f * 16, **heads)


def wide_resnet_v1(pretrained=None):
    """WiderResNet-38 U-Net, decoder base width 32; outputs {'mask'}."""
    return _wide_unet(pretrained, 'wide_resnet_v1', 32)


def wide_resnet_v2(pretrained=None):
    """WiderResNet-38 U-Net, decoder base width 16; outputs {'mask'}."""
    return _wide_unet(pretrained, 'wide_resnet_v2', 16)


def wide_resnet_hypercolumn(pretrained=None):
    """WiderResNet-38 U-Net with a hypercolumn mask head; outputs {'mask', 'aux', 'salt'}."""
    return _wide_unet(pretrained, 'wide_resnet_hypercolumn', 32, hypercolumn=True, hyper_reduce=16,
                      aux=True, salt=True)


def wide_resnet_se(pretrained=None):
    """WiderResNet-38 U-Net whose decoder blocks end in scSE; outputs {'mask'}."""
    return _wide_unet(pretrained, 'wide_resnet_se', 32, scse=True)


def wide_resnet_border(pretrained=None):
    """WiderResNet-38 U-Net with mask and border heads; outputs {'mask', 'border'}."""
    return _wide_unet(pretrained, 'wide_resnet_border', 32, border=True)
