"""Loading a model from a snapshot and predicting the test set with it."""
import torch

from utils.errors import UserError
from utils.io import load_snapshot


def model_from_snapshot(path, rt, arch=None, snap=None):
    """(model in eval mode on rt.device, snapshot dict); refuses a snapshot of another architecture.

    snap: the already loaded snapshot of `path`, if the caller has it.
    """
    from net.models import ARCHITECTURES, build_model
    snap = snap if snap is not None else load_snapshot(path)
    if arch is not None and arch != snap['arch']:
        raise UserError(f"{path} is a {snap['arch']} snapshot, not {arch}; drop --arch (the snapshot knows its own) "
                        f"or pass a {arch} snapshot")
    if snap['arch'] not in ARCHITECTURES:
        raise UserError(f"{path} was trained as {snap['arch']!r}, which this version does not have; "
                        f"use the version that trained it")
    model = build_model(snap['arch'], pretrained=None)
    try:
        model.load_state_dict(snap['model'])
    except RuntimeError as e:
        detail = ' '.join(line.strip() for line in str(e).splitlines()[:2])[:160]
        raise UserError(f"{path} does not fit architecture {snap['arch']} ({detail}); "
                        f"pass a snapshot made by train.py for that architecture") from None
    model = model.to(rt.device).eval()
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, snap


def transforms_for(snap, val_augs=None, val_transforms=None):
    """The snapshot's input transform and back-transform, unless overridden."""
    from net.augmentations import build_back_transform, build_val_aug
    return (build_val_aug(val_augs or snap['val_augs']),
            build_back_transform(val_transforms or snap['val_transforms']))
