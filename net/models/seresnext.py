"""U-Net over an SE-ResNeXt-50 (32x4d) encoder written in plain PyTorch.

Layout (Hu et al. 2018, ResNeXt bottlenecks with a squeeze-excitation gate in every block)
uses the module names of the widely shared Cadene ``pretrainedmodels`` checkpoint
(layer0.conv1, layerK.I.se_module.fc1, ...), so that file, minus ``last_linear``, can be
passed as ``pretrained=PATH``.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .common import SegNet, init_encoder
from .pretrained import init_encoder_weights


class SEModule(nn.Module):
    """Squeeze-excitation channel gate. (N, C, H, W) -> same."""

    def __init__(self, channels, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class SEResNeXtBottleneck(nn.Module):
    """1x1 -> grouped 3x3 (stride here) -> 1x1 (x4 expansion) -> SE, plus shortcut.

    x (N, cin, H, W) -> (N, 4 * planes, H/stride, W/stride).
    """

    expansion = 4

    def __init__(self, cin, planes, stride=1, groups=32, base_width=4):
        super().__init__()
        width = (planes * base_width // 64) * groups
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = SEModule(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se_module(self.bn3(self.conv3(out)))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class SEResNeXt50Encoder(nn.Module):
    """SE-ResNeXt-50 32x4d feature extractor, layer counts [3, 4, 6, 3].

    x (N, 3, H, W) -> [(N, 64, H/2), (N, 256, H/4), (N, 512, H/8), (N, 1024, H/16), (N, 2048, H/32)].
    """

    channels = (64, 256, 512, 1024, 2048)
    strides = (2, 4, 8, 16, 32)

    def __init__(self, layers=(3, 4, 6, 3)):
        super().__init__()
        self.layer0 = nn.Sequential(OrderedDict([
            ('conv1', nn.Conv2d(3, 64, 7, 2, 3, bias=False)),
            ('bn1', nn.BatchNorm2d(64)),
            ('relu1', nn.ReLU(inplace=True)),
            ('pool', nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ]))
        cin = 64
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for b in range(n):
                blocks.append(SEResNeXtBottleneck(cin, planes, stride=2 if (b == 0 and i > 0) else 1))
                cin = planes * SEResNeXtBottleneck.expansion
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
        init_encoder(self)
        # zero the last BN of each residual branch: every block starts as identity, which
        # steadies training from scratch
        for m in self.modules():
            if isinstance(m, SEResNeXtBottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x):
        l0 = self.layer0
        x0 = l0.relu1(l0.bn1(l0.conv1(x)))
        x1 = self.layer1(l0.pool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]


def seresnext(pretrained=None):
    """SE-ResNeXt-50 U-Net; outputs {'mask'}."""
    enc = SEResNeXt50Encoder()
    init_encoder_weights(enc, pretrained, 'seresnext', imagenet=None)
    return SegNet(enc, (256, 128, 64, 32, 16))
