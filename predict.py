"""Predict the test images with one snapshot and write a submission CSV.

    python3 predict.py --snapshot experiments/wide_fold0/snapshots/epoch_194.loss_1.1063.iout_0.855 --th 0.51

The architecture, input transform and back-transform come from the snapshot. Writes
EXP/predictions/<snapshot>.csv (id,rle_mask in sample_submission.csv order) and the raw
probabilities <snapshot>.npy (N, 101, 101) float16 beside it, for predict_fold_avg.py.
"""
from pathlib import Path

from utils.cli import Parser, data_options, device_options, predict_options
from utils.errors import UserError, run_cli


def parse_args(argv=None, tta=False):
    from net.tta import TTAS
    p = Parser(description=__doc__.split('\n')[0], parents=[predict_options(), data_options(), device_options()])
    if tta:
        p.add_argument('--tta', default='null_hflip', choices=sorted(TTAS), help="test-time augmentation set")
    args = p.parse_args(argv)
    check_options(p, args)
    if not tta:
        args.tta = 'null'
    return args


def check_options(p, args):
    """One-line errors for predict options that argparse cannot check by itself (names are optional here)."""
    from net.augmentations import BACK_TRANSFORMS, VAL_AUGS
    from net.models import ARCHITECTURES
    for name, registry in (('arch', ARCHITECTURES), ('val_augs', VAL_AUGS), ('val_transforms', BACK_TRANSFORMS)):
        value = getattr(args, name)
        if value is not None and value not in registry:
            p.error(f"argument --{name}: invalid choice: {value!r} (choose from {', '.join(sorted(registry))})")
    if args.out is not None and Path(args.out).suffix != '.csv':
        p.error(f"--out {args.out} must end in .csv")
    if args.batch_size < 1:
        p.error("--batch_size must be at least 1")
    if getattr(args, 'min_size', 0) != 'auto' and getattr(args, 'min_size', 0) < 0:
        p.error("--min_size must be at least 0")


def searched_options(snapshot, th, min_size):
    """Replace 'auto' threshold / min_size by what optimize_threshold.py saved for this snapshot."""
    if 'auto' not in (th, min_size):
        return th, min_size
    from utils.experiment import best_json_path, val_masks_path
    from utils.thresholds import read_found
    masks_fn = val_masks_path(snapshot)
    found = best_json_path(masks_fn)
    best_th, best_size = read_found(found, f"python3 optimize_threshold.py --masks_fn {masks_fn}")
    th = best_th if th == 'auto' else th
    min_size = best_size if min_size == 'auto' else min_size
    print(f"from {found.name}: --th {th:.2f} --min_size {min_size}")
    return th, min_size


def resolve_data_dir(args, snap):
    return Path(args.data_dir or snap.get('config', {}).get('data_dir') or 'data')


def default_out(snapshot, tag):
    snapshot = Path(snapshot)
    root = snapshot.parent.parent if snapshot.parent.name == 'snapshots' else snapshot.parent.parent.parent
    return root / 'predictions' / f"{snapshot.name}{tag}.csv"


def predict_one(path, args, rt, images, tta, snap=None):
    """Probabilities (N, 101, 101) of one snapshot: {'mask': ..., 'border': ... when it has one}."""
    from net.inference import predict_probs
    from net.inference import model_from_snapshot, transforms_for
    model, snap = model_from_snapshot(path, rt, args.arch, snap)
    val_aug, back = transforms_for(snap, args.val_augs, args.val_transforms)
    keys = ('mask', 'border') if 'border' in getattr(model, 'output_keys', ()) else ('mask',)
    probs, _ = predict_probs(model, images, val_aug, back, tta, rt, args.batch_size, keys=keys,
                             desc=f"predict {Path(path).name}")
    return probs, snap


def finish(out, ids, probs, th, extra=None, min_size=0):
    """Save raw probabilities beside the CSV and write the submission; print where they are."""
    from utils.io import save_npy
    from utils.submission import OUT_ADVICE, write_submission
    out = Path(out)
    if out.suffix != '.csv':
        raise UserError(f"--out {out} must end in .csv")
    with OUT_ADVICE():
        save_npy(out.with_suffix('.npy'), probs)
        for key, arr in (extra or {}).items():
            save_npy(out.with_name(out.stem + f'.{key}.npy'), arr)
        share = write_submission(out, ids, probs, th, min_size)
    print(f"raw probabilities: {out.with_suffix('.npy')}")
    print(f"submission: {out} ({len(ids)} images, {share:.1%} with salt at threshold {th})")
    return out


def main(args=None, tta=False):
    args = args if args is not None and not isinstance(args, list) else parse_args(args, tta)
    from net.runtime import setup_runtime
    from net.tta import build_tta
    from utils.data import load_test_images
    from utils.io import load_snapshot

    from utils.experiment import resolve_snapshot
    args.snapshot = resolve_snapshot(args.snapshot)
    rt = setup_runtime(args.device, args.amp, args.channels_last, args.workers, args.threads)
    views = build_tta(args.tta)
    snap = load_snapshot(args.snapshot)
    args.th, args.min_size = searched_options(args.snapshot, args.th, args.min_size)
    images, ids = load_test_images(resolve_data_dir(args, snap))
    probs, snap = predict_one(args.snapshot, args, rt, images, views, snap)
    out = args.out or default_out(args.snapshot, '' if args.tta == 'null' else f'.tta_{args.tta}')
    extra = {k: v for k, v in probs.items() if k != 'mask'}
    return finish(out, ids, probs['mask'], args.th, extra, args.min_size)


if __name__ == '__main__':
    run_cli(main)
