"""Inference every predict script shares: a model from a snapshot, its transforms, predict_probs, and the
glue of predict.py, predict_tta.py and predict_se.py (option checks, the images to predict, one snapshot's
probabilities)."""
import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from net.augmentations import BACK_TRANSFORMS, VAL_AUGS, build_back_transform, build_val_aug
from net.geometry import inputs_for, of_val
from net.loader import float_input, targets_from
from net.models import ARCHITECTURES, build_model
from net.runtime import setup_runtime
from net.tta import TTAS, build_tta
from net.config import ENSEMBLE_HELPS, PREDICT_GROUPS, PredictConfig
from utils.cli import Parser, check_ranges
from utils.config import add_options, from_namespace, ranges_of
from utils.data import data_dir_for, image_folder, load_test_images
from utils.errors import UserError
from utils.io import check_output, check_prediction_pair, guard_data_dir, load_snapshot
from utils.snapshots import prediction_path, resolve_snapshot, searched_options
from utils.submission import save_prediction


def model_from_snapshot(path, rt, arch=None, snap=None):
    """(model in eval mode on rt.device, snapshot dict); refuses a snapshot of another architecture.

    snap: the already loaded snapshot of `path`, if the caller has it.
    """
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
    val, back = snap['val_augs'], snap['val_transforms']
    if val_augs or val_transforms:
        size = of_val(val).size if val in VAL_AUGS else None
        val, back = inputs_for(size, val_augs or val, val_transforms or (None if val_augs else back),
                               sized_by=f"the snapshot (validated with {val})")
    return build_val_aug(val), build_back_transform(back)


# Images moved to the device at once, and probabilities moved back at once: one host round trip per
# chunk instead of per batch (a 2048 x 101 x 101 float16 chunk is 42 MB).
CHUNK = 2048
# Outputs with one value per image (N,), not a map: no TTA inverse, no back-transform.
IMAGE_LEVEL = frozenset({'salt'})
# The architectures with an image-level salt output (tests/test_models.py checks this against the models).
SALT_HEAD_ARCHS = ('ds_resnet_34', 'wide_resnet_hypercolumn', 'unet_lite_ds', 'unet_plain_ds', 'unet_plain_ds_w32',
                   'unet_plain_ds_w8', 'unet_plain_ds_scse', 'unet_plain_ds_scse_w8', 'unet_plain_ds_hyper',
                   'unet_plain_ds_hyper_w8', 'unet_plain_ds_dil', 'unet_plain_ds_dil_w8')


@torch.no_grad()
def predict_probs(model, images, val_aug, back, tta, rt, batch_size=64, keys=('mask',), out_dtype=np.float16,
                  desc=None, targets=None, loss_fn=None):
    """Probabilities at 101x101 for uint8 images (N, 101, 101), averaged over the TTA views.

    images and targets ((N, K, 101, 101) uint8) are numpy arrays or tensors already on the device
    (the resident validation fold). val_aug maps (B, C, 101, 101) to the model's input size and
    back maps outputs to 101x101; tta is a list of (forward, inverse) pairs applied around the
    model. With `targets` and `loss_fn`, also returns the mean loss of the plain view.
    Returns ({key: array (N, 101, 101) out_dtype}, mean loss or None); the image-level key 'salt'
    (a model with a salt head) gives an array (N,) instead, averaged over the views as they are.
    The loss is summed on the device; the host waits once per CHUNK images.
    """
    model.eval()
    n = len(images)
    out = {k: np.empty((n,) if k in IMAGE_LEVEL else (n, 101, 101), out_dtype) for k in keys}
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
                    p = torch.sigmoid(o[k].float())
                    p = p if k in IMAGE_LEVEL else inv(p)
                    acc[k] = p if acc[k] is None else acc[k] + p
            for k in keys:
                mean = acc[k] / len(tta)
                mean = mean if k in IMAGE_LEVEL else back(mean)[:, 0]
                parts[k].append(mean.to(_torch_dtype(out_dtype)))
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


# ---------------------------------------------------------------- the predict scripts' glue

# Every numeric option of the predict scripts, with its range (predict_se.py's --cycles: 0 is all of them).
PREDICT_RANGES = ranges_of(PredictConfig)


def predict_args(description, argv=None, tta=None, snapshot=True):
    """A predict script's PredictConfig from its command line: its fields of PredictConfig (predict.py has no
    --tta unless `tta` gives its default, and is then 'null'; snapshot=False: predict_se.py's --snapshot_dir
    and --cycles instead of --snapshot), checked by check_options."""
    names = {f.name for f in dataclasses.fields(PredictConfig)} - ({'snapshot_dir', 'cycles'} if snapshot else {'snapshot'})
    if tta is None:
        names.discard('tta')
    p = Parser(description=description)
    add_options(p, PredictConfig, defaults={'tta': tta} if tta else None, groups=PREDICT_GROUPS, only=names,
                helps=None if snapshot else ENSEMBLE_HELPS)
    ns = p.parse_args(argv)
    more = {} if tta is not None else {'tta': 'null'}
    config = from_namespace(PredictConfig, ns, **more)
    check_options(p, config)
    return config


def check_options(p, args):
    """One-line errors for predict options that argparse cannot check by itself (their registered names and
    types it checks: PredictConfig's fields give them)."""
    if args.out is not None and Path(args.out).suffix != '.csv':
        p.error(f"--out {args.out} must end in .csv")
    if args.batch_size < 1:
        p.error("--batch_size must be at least 1")
    if args.min_size != 'auto' and args.min_size < 0:
        p.error("--min_size must be at least 0")
    check_ranges(p, args, PREDICT_RANGES)


def images_to_predict(args, snap):
    """(uint8 images (N, 101, 101), ids): the PNGs of --images, else the stacked test set of the data folder
    (--data_dir, else the snapshot's)."""
    if args.images:
        return image_folder(args.images, args.data_dir)
    return load_test_images(data_dir_for(args.data_dir, snap))


def output_tag(args):
    """What the default output name adds for --images: .<folder name> ('' for the test set)."""
    return f".{Path(args.images).resolve().name}" if args.images else ''


def predict_one(path, args, rt, images, tta, snap=None, out_dtype=np.float16):
    """Probabilities (N, 101, 101) of one snapshot: {'mask': ..., 'border': ... when it has one, 'salt': (N,)
    with --empty_below}, as `out_dtype` (float16, as the predict scripts save them), and the snapshot dict."""
    model, snap = model_from_snapshot(path, rt, args.arch, snap)
    val_aug, back = transforms_for(snap, args.val_augs, args.val_transforms)
    outputs = getattr(model, 'output_keys', ())
    keys = ('mask', 'border') if 'border' in outputs else ('mask',)
    if args.empty_below is not None:
        if 'salt' not in outputs:
            raise UserError(f"--empty_below needs a model with a salt head, and {path} is a {snap['arch']} without "
                            f"one; drop --empty_below, or pass a snapshot of an architecture with a 'salt' output "
                            f"({', '.join(SALT_HEAD_ARCHS)})")
        keys += ('salt',)
    probs, _ = predict_probs(model, images, val_aug, back, tta, rt, args.batch_size, keys=keys,
                             out_dtype=out_dtype, desc=f"predict {Path(path).name}")
    for k, p in probs.items():
        bad = int((~np.isfinite(p)).reshape(len(p), -1).any(1).sum()) if len(p) else 0
        if bad:
            raise UserError(f"{path} gives NaN or infinite {k} probabilities for {bad} of {len(p)} images (its "
                            f"weights are damaged, or training diverged); pass another snapshot, e.g. an earlier "
                            f"epoch's")
    return probs, snap


def predict_snapshot(args):
    """predict.py and predict_tta.py: one snapshot (or an experiment's best), its probabilities saved and
    turned into a submission (default EXP/predictions/<snapshot>[.tta_<set>][.<images folder>].csv)."""
    args = dataclasses.replace(args, snapshot=resolve_snapshot(args.snapshot))
    rt = setup_runtime(args.device, args.amp, args.channels_last, args.workers, args.threads)
    views = build_tta(args.tta)
    snap = load_snapshot(args.snapshot)
    tag = ('' if args.tta == 'null' else f'.tta_{args.tta}') + output_tag(args)
    out = args.out or prediction_path(args.snapshot, tag)
    check_prediction_outputs(out, args, snap)
    th, min_size = searched_options(args.snapshot, args.th, args.min_size)
    args = dataclasses.replace(args, th=th, min_size=min_size)
    images, ids = images_to_predict(args, snap)
    probs, snap = predict_one(args.snapshot, args, rt, images, views, snap)
    extra = {k: v for k, v in probs.items() if k != 'mask'}
    return save_prediction(out, ids, probs['mask'], args.th, extra, args.min_size,
                           emptied(probs.get('salt'), args.empty_below))


def check_prediction_outputs(out, args, snap):
    """Before any work: the submission `out` and the arrays beside it may be written (utils.io.check_output),
    none of them being the data folder's stacked arrays or CSVs or another input."""
    if not args.images:
        guard_data_dir(data_dir_for(args.data_dir, snap))
    out = Path(out)
    check_prediction_pair(out)
    if args.empty_below is not None:
        check_output(out.with_name(out.stem + '.salt.npy'))


def emptied(salt, below):
    """Which masks --empty_below P empties: those whose salt probability (N,) is below P; None when off."""
    if below is None or salt is None:
        return None
    return np.asarray(salt, np.float32) < below

