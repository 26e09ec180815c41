"""Inference every predict script shares: a model from a snapshot, its transforms, and predict_probs."""
import numpy as np
import torch
from tqdm import tqdm

from net.loader import float_input, targets_from
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
    """(input transform, back-transform) of a snapshot: the ones it was validated with, unless overridden.

    An overriding val_augs brings the back-transform that undoes it; overrides are checked
    (net.geometry.inputs_for) against each other and the snapshot's input size.
    """
    from net.augmentations import VAL_AUGS, build_back_transform, build_val_aug
    from net.geometry import inputs_for, of_val
    val, back = snap['val_augs'], snap['val_transforms']
    if val_augs or val_transforms:
        size = of_val(val).size if val in VAL_AUGS else None
        val, back = inputs_for(size, val_augs or val, val_transforms or (None if val_augs else back),
                               sized_by=f"the snapshot (validated with {val})")
    return build_val_aug(val), build_back_transform(back)


# Images moved to the device at once, and probabilities moved back at once: one host round trip per
# chunk instead of per batch (a 2048 x 101 x 101 float16 chunk is 42 MB).
CHUNK = 2048


@torch.no_grad()
def predict_probs(model, images, val_aug, back, tta, rt, batch_size=64, keys=('mask',), out_dtype=np.float16,
                  desc=None, targets=None, loss_fn=None):
    """Probabilities at 101x101 for uint8 images (N, 101, 101), averaged over the TTA views.

    images and targets ((N, K, 101, 101) uint8) are numpy arrays or tensors already on the device
    (the resident validation fold). val_aug maps (B, C, 101, 101) to the model's input size and
    back maps outputs to 101x101; tta is a list of (forward, inverse) pairs applied around the
    model. With `targets` and `loss_fn`, also returns the mean loss of the plain view.
    Returns ({key: array (N, 101, 101) out_dtype}, mean loss or None). The loss is summed on the
    device; the host waits once per CHUNK images.
    """
    model.eval()
    n = len(images)
    out = {k: np.empty((n, 101, 101), out_dtype) for k in keys}
    loss_sum = torch.zeros((), device=rt.device, dtype=torch.float64)
    bar = tqdm(total=n, desc=desc, unit='img', leave=False, disable=desc is None or not rt.is_main, mininterval=0.5)
    for c in range(0, n, CHUNK):
        chunk = _on_device(images[c:c + CHUNK], rt)
        truth = _on_device(targets[c:c + CHUNK], rt) if loss_fn is not None else None
        parts = {k: [] for k in keys}
        for a in range(0, len(chunk), batch_size):
            batch = chunk[a:a + batch_size]
            x = float_input(val_aug(batch[:, None].float() / 255.0), rt)
            acc = {k: None for k in keys}
            for view, (fwd, inv) in enumerate(tta):
                with rt.autocast():
                    o = model(fwd(x))
                if view == 0 and truth is not None:
                    t = (val_aug(truth[a:a + batch_size].float()) > 0.5).float()
                    loss_sum += loss_fn(o, targets_from(t)).detach().double() * len(batch)
                for k in keys:
                    p = inv(torch.sigmoid(o[k].float()))
                    acc[k] = p if acc[k] is None else acc[k] + p
            for k in keys:
                parts[k].append(back(acc[k] / len(tta))[:, 0].to(_torch_dtype(out_dtype)))
            bar.update(len(batch))
        for k in keys:
            out[k][c:c + len(chunk)] = torch.cat(parts[k]).cpu().numpy()
    bar.close()
    return out, (float(loss_sum) / n if loss_fn is not None and n else None)


def _on_device(arr, rt):
    if isinstance(arr, torch.Tensor):
        return arr.to(rt.device, non_blocking=True)
    # np.array copies: test arrays are read-only memory maps, which torch will not wrap.
    t = torch.from_numpy(np.array(arr))
    return t.pin_memory().to(rt.device, non_blocking=True) if rt.cuda else t


def _torch_dtype(np_dtype):
    return {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}[np.dtype(np_dtype)]
