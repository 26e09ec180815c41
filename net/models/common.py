"""Building blocks shared by every architecture: conv units, scSE, U-Net decoder and output heads.

Every network in this package is a :class:`SegNet`: an encoder that returns a list of feature
maps (finest first), a U-Net decoder, and a set of heads chosen by flags. Keeping one assembly
class means the output contract (a dict of float32 logits, ``output_keys``) lives in one place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def upsample_to(x, size):
    """Bilinear resize of ``x`` (N, C, h, w) to ``size`` (H, W); a no-op when already there."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)


class ConvBnAct(nn.Sequential):
    """Conv + BatchNorm + ReLU (conv + bias + ReLU with bn=False).

    (N, cin, H, W) -> (N, cout, H/stride, W/stride).
    """

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, bn=True, dilation=1):
        conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=dilation * (kernel_size // 2), groups=groups,
                         bias=not bn, dilation=dilation)
        norm = [nn.BatchNorm2d(cout)] if bn else []
        super().__init__(conv, *norm, nn.ReLU(inplace=True))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al. 2018). (N, C, H, W) -> same.

    The channel gate re-weights feature maps from global context; the spatial gate re-weights
    pixels. The two recalibrated maps are summed, so either gate alone can keep a feature.
    """

    def __init__(self, channels, reduction=8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.cse = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.cse(x) + x * self.sse(x)


class DecoderBlock(nn.Module):
    """U-Net decoder step: upsample x2, merge the skip, ``n_convs`` conv-bn-relu, optional scSE.

    x: (N, cin, h, w), skip: (N, skip_ch, 2h, 2w) or None -> (N, cout, 2h, 2w).
    up: 'bilinear' (parameter-free) or 'deconv' (2x2 stride-2 transposed conv to ``skip_ch``
        channels, or cin // 2 without a skip): cheaper on CPU, where bilinear's backward is
        slow, and it thins the tensor that the next conv reads. 'none': x is already at the
        skip's resolution (an encoder whose deepest level is dilated, not pooled): (N, cout, h, w).
    merge: 'cat' (U-Net) or 'add' (LinkNet-style, needs up='deconv'): adding skips avoids the
        concat copy and halves the next conv's input, which matters at full resolution on CPU.
    bn: False gives biased convs without BatchNorm.
    """

    def __init__(self, cin, skip_ch, cout, scse=False, n_convs=2, up='bilinear', merge='cat', bn=True):
        super().__init__()
        if up == 'deconv':
            up_ch = skip_ch or max(cin // 2, cout)
            self.up = nn.ConvTranspose2d(cin, up_ch, 2, stride=2, bias=False)
        elif up in ('bilinear', 'none'):
            if up == 'none' and not skip_ch:
                raise ValueError("up='none' merges a skip at the same resolution; it needs skip_ch")
            up_ch = cin
            self.up = None
        else:
            raise ValueError(f'unknown upsampling {up!r}')
        if merge not in ('cat', 'add') or (merge == 'add' and up == 'bilinear'):
            raise ValueError(f"merge must be 'cat', or 'add' with up='deconv'; got {merge!r} with {up!r}")
        if merge == 'add' and up == 'none' and cin != skip_ch:
            raise ValueError(f"merge='add' with up='none' needs cin == skip_ch, got {cin} and {skip_ch}")
        self.merge = merge
        conv_in = up_ch if (merge == 'add' or not skip_ch) else up_ch + skip_ch
        layers = [ConvBnAct(conv_in, cout, bn=bn)]
        layers += [ConvBnAct(cout, cout, bn=bn) for _ in range(n_convs - 1)]
        self.convs = nn.Sequential(*layers)
        self.scse = SCSE(cout) if scse else nn.Identity()

    def forward(self, x, skip=None):
        if self.up is not None:
            x = self.up(x)
        if skip is not None:
            x = upsample_to(x, skip.shape[-2:])
            x = x + skip if self.merge == 'add' else torch.cat([x, skip], dim=1)
        elif self.up is None:
            x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
        return self.scse(self.convs(x))


class SaltHead(nn.Module):
    """Image-level "contains salt" classifier on globally pooled deepest encoder features.

    (N, C, h, w) -> (logit (N,), features (N, hidden)); the features let a model fuse
    image-level context back into the pixel head.
    """

    def __init__(self, cin, hidden=64):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, 1)
        self.hidden = hidden

    def forward(self, x):
        feat = self.fc(self.pool(x).flatten(1))
        return self.out(feat).squeeze(1), feat


class SaltFusion(nn.Module):
    """Conv-BN-ReLU whose pre-norm output also gets an image-level descriptor: conv(x) + linear(g).

    Equal to a conv over concat(x, g broadcast over H, W) (the g part of the kernel sees a
    constant image, so it reduces to one vector per image), without materialising that map.
    x (N, cin, H, W), g (N, G) -> (N, cout, H, W).
    """

    def __init__(self, cin, cout, g_channels, kernel_size=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.lin = nn.Linear(g_channels, cout, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x, g):
        y = self.conv(x)
        return self.act(self.bn(y + self.lin(g)[:, :, None, None].to(y.dtype)))


class SegNet(nn.Module):
    """Encoder + U-Net decoder + heads; returns a dict of float32 logits.

    encoder: module with ``channels`` and ``strides`` (finest first) whose forward maps
        x (N, 3, H, W) to a list of feature maps, one per stride. The finest stride may be > 1;
        the decoder then adds skip-less upsampling steps until it reaches the input resolution.
        Two levels may share a stride (a dilated, unpooled deepest level): that decoder step
        merges its skip without upsampling.
    decoder_channels: output width of each decoder step, coarsest first; its length must be
        (number of encoder features - 1) + log2(finest stride).
    center: channels of an optional 1x1 conv-bn-relu on the deepest features before decoding
        (used to tame very wide encoder ends); None keeps them as they are.
    scse, n_convs, up, merge: passed to every :class:`DecoderBlock`.
    top_bn: False drops BatchNorm from the last (input-resolution) decoder step, where its
        passes over the largest tensor cost more on CPU than the conv itself.
    hypercolumn: concat all decoder outputs, resized to the finest one, then a conv-bn-relu
        (``hyper_kernel``, ``hyper_channels`` out) before the mask head. With ``hyper_reduce``
        each step is first cut to that many channels by a 1x1 conv at its own resolution, so
        that fewer channels are upsampled.
    aux: also return one logit map per decoder step under ``'aux'`` (deep supervision).
    salt: also return an image-level logit under ``'salt'``.
    fuse_salt: feed the salt head's hidden features into the last conv before the mask head
        (the hypercolumn conv, or an extra 1x1 conv without hypercolumn); needs ``salt``.
    border: also return a border logit map under ``'border'``.
    channels_last: run in channels-last layout whatever the caller passes; on CPU (oneDNN)
        a narrow net trains faster that way (benchmarks/results.md), and converting a
        3-channel input costs next to nothing.

    forward(x (N, 3, H, W)) -> {'mask': (N, 1, H, W), ['aux': [(N, 1, H, W)] * steps],
    ['salt': (N,)], ['border': (N, 1, H, W)]}. Logits are cast to float32 so that losses are
    computed in full precision under autocast.
    """

    def __init__(self, encoder, decoder_channels, *, center=None, scse=False, n_convs=2, up='bilinear',
                 merge='cat', top_bn=True, hypercolumn=False, hyper_channels=64, hyper_reduce=None,
                 hyper_kernel=3, aux=False, salt=False, fuse_salt=False, border=False, salt_hidden=64,
                 channels_last=False):
        super().__init__()
        if fuse_salt and not salt:
            raise ValueError('fuse_salt needs salt=True')
        self.encoder = encoder
        enc_ch = list(encoder.channels)
        finest = encoder.strides[0]
        n_extra = finest.bit_length() - 1
        skips = enc_ch[:-1][::-1] + [0] * n_extra
        if len(decoder_channels) != len(skips):
            raise ValueError(f'decoder_channels needs {len(skips)} entries, got {len(decoder_channels)}')

        deep = enc_ch[-1]
        self.center = ConvBnAct(deep, center, kernel_size=1) if center else nn.Identity()
        cin = center or deep
        strides = list(encoder.strides)[::-1]  # deepest first: the decoder steps go from strides[i] to strides[i + 1]
        blocks = []
        for i, (skip_ch, cout) in enumerate(zip(skips, decoder_channels)):
            last = i == len(skips) - 1
            same = i + 1 < len(strides) and strides[i + 1] == strides[i]
            blocks.append(DecoderBlock(cin, skip_ch, cout, scse=scse, n_convs=n_convs, up='none' if same else up,
                                       merge=merge, bn=top_bn or not last))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.n_skips = len(enc_ch) - 1

        head_in = decoder_channels[-1]
        self.hyper = self.hyper_reduce = self.fuse = None
        if hypercolumn:
            if hyper_reduce:
                self.hyper_reduce = nn.ModuleList(ConvBnAct(c, hyper_reduce, 1) for c in decoder_channels)
                hyper_in = hyper_reduce * len(decoder_channels)
            else:
                hyper_in = sum(decoder_channels)
            if fuse_salt:
                # the hypercolumn conv doubles as the fusion layer: no extra full-resolution pass
                self.fuse = SaltFusion(hyper_in, hyper_channels, salt_hidden, hyper_kernel)
            else:
                self.hyper = ConvBnAct(hyper_in, hyper_channels, hyper_kernel)
            head_in = hyper_channels
        elif fuse_salt:
            self.fuse = SaltFusion(head_in, head_in, salt_hidden)
        self.hypercolumn = hypercolumn
        self.salt_head = SaltHead(deep, salt_hidden) if salt else None
        self.mask_head = nn.Conv2d(head_in, 1, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in decoder_channels) if aux else None
        self.border_head = nn.Sequential(ConvBnAct(head_in, head_in), nn.Conv2d(head_in, 1, 1)) if border else None

        keys = {'mask'}
        keys |= {'aux'} if aux else set()
        keys |= {'salt'} if salt else set()
        keys |= {'border'} if border else set()
        self.output_keys = frozenset(keys)
        _init_weights(self, skip=self.encoder)
        # He init on a 1-channel output gives logits of std ~1.4 per unit input; start near 0 instead
        heads = [self.mask_head] + list(self.aux_heads or []) + ([self.border_head[-1]] if border else [])
        for h in heads:
            nn.init.normal_(h.weight, std=0.01)
            nn.init.zeros_(h.bias)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x):
        size = x.shape[-2:]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        deep = feats[-1]
        skips = feats[:-1][::-1] + [None] * (len(self.blocks) - self.n_skips)
        y = self.center(deep)
        decoded = []
        for block, skip in zip(self.blocks, skips):
            y = block(y, skip)
            decoded.append(y)

        out = {}
        top = decoded[-1]
        if self.hypercolumn:
            cols = decoded if self.hyper_reduce is None else [r(d) for r, d in zip(self.hyper_reduce, decoded)]
            top = torch.cat([upsample_to(c, top.shape[-2:]) for c in cols], dim=1)
            if self.hyper is not None:
                top = self.hyper(top)
        if self.salt_head is not None:
            salt_logit, salt_feat = self.salt_head(deep)
            out['salt'] = salt_logit.float()
            if self.fuse is not None:
                # every pixel gets to see whether the image as a whole looks like it has salt
                top = self.fuse(top, salt_feat)
        out['mask'] = upsample_to(self.mask_head(top), size).float()
        if self.aux_heads is not None:
            out['aux'] = [upsample_to(h(d), size).float() for h, d in zip(self.aux_heads, decoded)]
        if self.border_head is not None:
            out['border'] = upsample_to(self.border_head(top), size).float()
        return out


def _init_weights(module, skip=None):
    """He init for convs, unit BN, small linear init; the encoder (``skip``) keeps its own init."""
    skipped = set(skip.modules()) if skip is not None else set()
    for m in module.modules():
        if m in skipped:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_encoder(encoder):
    """He init for an encoder written here (torchvision encoders come initialised already)."""
    _init_weights(encoder)
