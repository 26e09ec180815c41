"""U-Nets over torchvision's ResNet-34: the plain v1 and the deeply supervised ``ds_resnet_34``."""
from __future__ import annotations

from torch import nn

from .common import SegNet
from .pretrained import init_encoder_weights


class ResNet34Encoder(nn.Module):
    """torchvision ResNet-34 without its classifier, returning five feature maps.

    The submodules keep torchvision's names, so its ImageNet state dict (minus ``fc``) loads
    with strict key checking. x (N, 3, H, W) -> [(N, 64, H/2), (N, 64, H/4), (N, 128, H/8),
    (N, 256, H/16), (N, 512, H/32)] (square sizes shown for brevity).
    """

    channels = (64, 64, 128, 256, 512)
    strides = (2, 4, 8, 16, 32)

    def __init__(self):
        super().__init__()
        # torchvision is imported here, not at the top: importing it (it pulls in torch._dynamo)
        # costs about a second, which every command would pay even for the archs that need none of it.
        from torchvision.models import resnet34
        net = resnet34(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x):
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]


def _encoder(pretrained, arch):
    from torchvision.models import ResNet34_Weights
    enc = ResNet34Encoder()
    init_encoder_weights(enc, pretrained, arch, imagenet=ResNet34_Weights.IMAGENET1K_V1)
    return enc


def unet_resnet34_v1(pretrained=None):
    """U-Net over ResNet-34; outputs {'mask'}. Five decoder steps of upsample + skip + 2 convs."""
    # The encoder is built before the decoder so that a bad weights file fails before any
    # decoder work, and SegNet leaves the encoder's (possibly loaded) weights untouched.
    return SegNet(_encoder(pretrained, 'unet_resnet34_v1'), (256, 128, 64, 32, 16))


def ds_resnet_34(pretrained=None):
    """Deeply supervised ResNet-34 U-Net; outputs {'mask', 'aux', 'salt'}.

    The fused mask head sees the hypercolumn of all five decoder steps (each cut to 16 channels
    before upsampling, which keeps the full-resolution 3x3 conv affordable) plus the salt
    head's image-level features, so empty-image evidence can suppress spurious pixels.
    """
    return SegNet(_encoder(pretrained, 'ds_resnet_34'), (256, 128, 64, 32, 32),
                  hypercolumn=True, hyper_reduce=16, aux=True, salt=True, fuse_salt=True)
