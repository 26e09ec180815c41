"""Architecture registry: ``ARCHITECTURES[name](pretrained=None) -> nn.Module``.

Every model maps x (N, 3, H, W), H and W multiples of 32 (16 for the unet_lite and unet_plain families, 8 for unet_plain_ds_dil*), ImageNet-normalised gray repeated to
three channels, to a dict of float32 logits: 'mask' (N, 1, H, W) always, and per model some of
'aux' (list of (N, 1, H, W)), 'salt' (N,), 'border' (N, 1, H, W); ``model.output_keys`` says which.
``pretrained``: None/'none', 'auto', 'imagenet', or a path to an encoder state dict (see ``pretrained.py``).
"""
from utils.errors import lookup

from .lite import (unet_lite, unet_lite_border, unet_lite_ds, unet_lite_w32, unet_plain, unet_plain_ds,
                   unet_plain_ds_dil, unet_plain_ds_dil_w8, unet_plain_ds_hyper, unet_plain_ds_hyper_w8,
                   unet_plain_ds_scse, unet_plain_ds_scse_w8, unet_plain_ds_w32, unet_plain_ds_w8, unet_plain_hyper,
                   unet_plain_scse, unet_plain_w8)
from .resnet_unet import ds_resnet_34, unet_resnet34_v1
from .seresnext import seresnext
from .wide_resnet import (wide_resnet_border, wide_resnet_hypercolumn, wide_resnet_se, wide_resnet_v1,
                          wide_resnet_v2)

ARCHITECTURES = {
    'unet_resnet34_v1': unet_resnet34_v1,
    'wide_resnet_v1': wide_resnet_v1,
    'wide_resnet_v2': wide_resnet_v2,
    'wide_resnet_hypercolumn': wide_resnet_hypercolumn,
    'wide_resnet_se': wide_resnet_se,
    'seresnext': seresnext,
    'ds_resnet_34': ds_resnet_34,
    'wide_resnet_border': wide_resnet_border,
    'unet_lite': unet_lite,
    'unet_lite_w32': unet_lite_w32,
    'unet_lite_ds': unet_lite_ds,
    'unet_lite_border': unet_lite_border,
    'unet_plain': unet_plain,
    'unet_plain_ds': unet_plain_ds,
    'unet_plain_ds_w32': unet_plain_ds_w32,
    'unet_plain_ds_w8': unet_plain_ds_w8,
    'unet_plain_w8': unet_plain_w8,
    'unet_plain_scse': unet_plain_scse,
    'unet_plain_hyper': unet_plain_hyper,
    'unet_plain_ds_scse': unet_plain_ds_scse,
    'unet_plain_ds_scse_w8': unet_plain_ds_scse_w8,
    'unet_plain_ds_hyper': unet_plain_ds_hyper,
    'unet_plain_ds_hyper_w8': unet_plain_ds_hyper_w8,
    'unet_plain_ds_dil': unet_plain_ds_dil,
    'unet_plain_ds_dil_w8': unet_plain_ds_dil_w8,
}


def build_model(name, pretrained=None):
    """Build architecture ``name``; UserError listing the valid names when it is unknown."""
    return lookup(ARCHITECTURES, name, 'architecture')(pretrained=pretrained)


__all__ = ['ARCHITECTURES', 'build_model']
