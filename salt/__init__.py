"""The pipeline from Python (a notebook, say), with the config the command line makes.

    from salt import TrainConfig, train, predict, write_submission
    config = TrainConfig(arch='unet_plain_ds', train_augs='train_112_v3', loss='combined_bce',
                         optimizer='adam_1e-3', scheduler='cosine', n_epochs=30, batch_size=16,
                         data_dir='data', experiment_dir='experiments/nb')
    summary = train(config)                    # as `python3 train.py ...`; returns the run's summary
    probs, ids = predict('experiments/nb', data_dir='data', tta='null_hflip')   # the test images
    write_submission('experiments/nb/submission.csv', ids, probs, th=0.5)

train(**options) builds the config from keyword options instead (input='pad112' names the
geometry, as --input does). Values are checked as the parser checks them: a bad one raises
utils.errors.UserError with the one-line message the command line prints.
"""
from net.config import TrainConfig, validated
from utils.submission import write_submission

__all__ = ['TrainConfig', 'train', 'predict', 'write_submission']


def train(config=None, **options):
    """Train one run, as train.py does: `config` (a TrainConfig), with `options` replacing its fields, or a
    TrainConfig made of `options` alone. Returns the summary dict (summary.json)."""
    from net.training import run
    return run(validated(config, options))


def predict(snapshot, images=None, data_dir=None, tta='null', device='auto', batch_size=64):
    """Salt probabilities (N, 101, 101) float32 of a snapshot (a file, or an experiment folder: its best),
    as predict.py / predict_tta.py compute them (NaN or infinite ones refused).

    images: uint8 (N, 101, 101) to predict; None: the stacked test images of `data_dir` (default: the data
    the snapshot was trained on). Returns (probabilities, ids); ids is None for images given as an array.
    """
    import numpy as np

    from net.config import PredictConfig
    from net.inference import images_to_predict, predict_one
    from net.runtime import setup_runtime
    from net.tta import build_tta
    from utils.errors import UserError
    from utils.io import load_snapshot
    from utils.snapshots import resolve_snapshot

    cfg = PredictConfig(snapshot=str(resolve_snapshot(snapshot)), data_dir=data_dir, tta=tta, device=device,
                        batch_size=batch_size)
    views = build_tta(tta)
    snap = load_snapshot(cfg.snapshot)
    rt = setup_runtime(device)
    ids = None
    if images is None:
        images, ids = images_to_predict(cfg, snap)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (101, 101):
        raise UserError(f"images must be uint8 (N, 101, 101), as utils/stack_and_save.py stacks them; got "
                        f"{images.dtype} {images.shape}")
    probs, _ = predict_one(cfg.snapshot, cfg, rt, images, views, snap, out_dtype=np.float32)
    return probs['mask'], ids
