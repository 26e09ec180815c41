"""A training run's config: every option of train.py and train_border.py is one field of TrainConfig.

The parser is generated from the fields (utils.config), grouped as the fields are: data, model, input,
loss, optimizer, schedule, run, and the device options of every script (utils.cli.DeviceOptions). The
saved fields, with the values resolved from them (the validation input and back-transform, the input
name, absolute paths, the command), are the run's train_config.json, and are kept in its checkpoint and
in every snapshot; ``TrainConfig.from_saved`` reads them back.

Adding a training option is adding a field here: its default, help, group and range go on the field;
the code that uses it reads ``config.name`` (net.training resolves the defaults that depend on other fields
before anything runs; net/loop.py's fit gets that TrainConfig). If --resume may change it, add its name to
RESUME_MAY_CHANGE below.
"""
import dataclasses
from dataclasses import dataclass

from utils.cli import SEED_RANGE, DeviceOptions, int_or_auto, probability, probability_or_auto
from utils.config import option

GROUPS = {'data': 'data', 'model': 'model', 'input': 'input geometry', 'loss': 'loss', 'optimizer': 'optimizer',
          'schedule': 'schedule', 'run': 'run', 'device': 'device'}


def _names(module, attr):
    """The names of a registry of another module, looked up when a parser is built (the registries import
    torch and the models)."""
    def names():
        import importlib
        return getattr(importlib.import_module(module), attr)
    return names


@dataclass(frozen=True)
class TrainConfig(DeviceOptions):
    # data
    data_dir: str | None = option(None, "folder with train.csv and the stacked .npy arrays (default ./data)",
                                  group='data')
    folds_csv: str | None = option(None, "folds file (default: DATA_DIR/train_with_folds.csv)", group='data')
    fold: int = option(0, "the fold validated on (the others are trained on)", group='data', range=(0, 10 ** 6))
    limit: int = option(0, "use only the first N training and N//4 validation images (smoke tests)", group='data',
                        range=(0, 10 ** 9))
    # model
    arch: str = option('unet_resnet34_v1', "architecture", group='model',
                       choices=_names('net.models', 'ARCHITECTURES'))
    pretrained: str = option('auto', "encoder weights: auto (ImageNet weights where the encoder has them and they are "
                                     "cached or downloadable, else from scratch, quietly), imagenet (the same, with a "
                                     "warning when they cannot be had), none, or a path to an encoder state dict",
                             group='model')
    init: str | None = option(None, "start from all weights of a snapshot of the same --arch, or of an experiment "
                                    "directory's best snapshot (e.g. a BCE run, to fine-tune with lovasz)",
                              group='model', metavar='SNAPSHOT')
    # input geometry (--input NAME is the alias of --train_augs; net/training.py adds it)
    train_augs: str = option('train_128_v1', "the same choice as --input, by the train augmentation's name "
                                             "(train_112_v3 is --input pad112, train_128_v3 pad128, train_128_v1 "
                                             "resize128, train_128_v2 resize128_affine, train_256_v1 resize202_pad256)",
                             group='input', choices=_names('net.geometry', 'PRESETS'))
    val_augs: str | None = option(None, "validation input transform (default: the input preset's)", group='input',
                                  choices=_names('net.augmentations', 'VAL_AUGS'))
    val_transforms: str | None = option(None, "back-transform to 101x101 (default: the one that undoes --val_augs)",
                                        group='input', choices=_names('net.augmentations', 'BACK_TRANSFORMS'))
    # loss
    loss: str = option('BCE', "training loss", group='loss', choices=_names('net.losses', 'LOSSES'))
    loss_region: str = option('full', "center: the loss sees only the fixed central 101x101 window of the input, "
                                      "where a padding preset (train_112_v3, train_128_v3) puts the tile, not its "
                                      "reflect-101 pad", group='loss', choices=('full', 'center'))
    small_crops: float = option(0.0, "add F x (training images) synthetic samples, corner crops of training tiles "
                                     "holding 50-300 salt pixels resized back to 101x101, at loss weight 0.5 (0: none)",
                                group='loss', metavar='F', range=(0, 10 ** 3))
    # optimizer
    optimizer: str = option('adam_1e-4', "optimizer and its learning rate", group='optimizer',
                            choices=_names('net.optim', 'OPTIMIZERS'))
    lr: float | None = option(None, "learning rate instead of the optimizer name's (e.g. scaled up with a larger "
                                    "--batch_size)", group='optimizer', range=(0, 10.0))
    batch_size: int = option(32, "training images per step", group='optimizer', range=(1, 1 << 16))
    val_batch_size: int = option(64, "validation images per step", group='optimizer', range=(1, 1 << 16))
    # schedule
    scheduler: str = option('step_50_05', "learning-rate schedule by epoch", group='schedule',
                            choices=_names('net.optim', 'SCHEDULERS'))
    schedule_by: str = option('epoch', "time: with --max_minutes, the learning rate follows a cosine over the time "
                                       "budget", group='schedule', choices=('epoch', 'time'))
    n_epochs: int | None = option(None, "epochs (default 200; with --resume, the run's own)", group='schedule',
                                  range=(1, 10 ** 7))
    cycles: int = option(1, "snapshot ensembling: restart the schedule this many times; snapshots of cycle k go to "
                            "snapshots/cycle_k/", group='schedule', range=(1, 10 ** 6))
    max_minutes: float = option(0.0, "stop cleanly (validation, snapshot, log) once this much training time is spent "
                                     "(0: no limit)", group='schedule', range=(0, 10 ** 7))
    swa: float = option(0.0, "stochastic weight averaging over the last SHARE (0-1) of the epochs, or of the time "
                             "budget with --schedule_by time; the averaged model is saved under snapshots/swa/ (0: off)",
                        group='schedule', metavar='SHARE', range=(0, 1))
    # run
    experiment_dir: str = option(None, "the run's folder: config, logs, checkpoint, snapshots", group='run',
                                 required=True)
    seed: int = option(42, "seed of the weights, the augmentation and the batch order", group='run',
                       range=SEED_RANGE)
    keep_snapshots: int = option(0, "keep only the K best snapshots of each cycle (with their validation masks), "
                                    "deleting the others as they fall out (0: keep all; a wide_resnet snapshot is "
                                    "about 450 MB)", group='run', metavar='K', range=(0, 10 ** 6))
    loader: str = option('auto', "device: the fold stays on the device (GPU or CPU) and whole batches are augmented "
                                 "there (auto, the faster on both); prefetch: albumentations image by image on a "
                                 "background thread (auto with --workers N)",
                         group='device', saved=False, choices=('auto', 'device', 'prefetch'))
    tensorboard: bool = option(False, "also write each epoch's losses, validation metrics, learning rate, time and "
                                      "the loss's terms to EXP/tensorboard/ (tensorboard --logdir EXP/tensorboard)",
                               group='run', saved=False)
    resume: bool = option(False, "continue the run in --experiment_dir from its last epoch", group='run', saved=False,
                          cli=False)
    overwrite: bool = option(False, "delete the run in --experiment_dir and start again", group='run', saved=False,
                             cli=False)
    # set by the script, not options
    border: bool = option(False, "train_border.py: the targets are the mask and its border", cli=False)
    given: frozenset = option(frozenset(), "the options given on the command line", saved=False, cli=False)
    command: str | None = option(None, "the command line that started the run", cli=False)

    def check(self, error):
        """The checks across fields (a range of one field is utils.cli.check_ranges's): error(message) for each."""
        if self.lr is not None and not self.lr > 0:
            error(f"--lr must be a positive number; got {self.lr}")
        if self.cycles > (self.n_epochs or 200):
            error(f"--cycles {self.cycles} is more than --n_epochs {self.n_epochs}")
        if not 0 <= self.swa < 1:
            error(f"--swa is the share of the run to average, between 0 and 1 (e.g. 0.25); got {self.swa}")
        if self.swa and self.cycles > 1:
            error("--swa and --cycles do not go together: average a cycled run's snapshots with predict_se.py instead")

    @classmethod
    def from_saved(cls, saved):
        """A TrainConfig from a saved config dict (train_config.json, a checkpoint's or a snapshot's), the fields an
        older version did not save at their defaults; the resolved values beyond the fields are left out."""
        names = {f.name for f in dataclasses.fields(cls) if f.metadata.get('saved')}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def record(self):
        """The dict saved with the run (train_config.json, the checkpoint, every snapshot): the saved fields, and
        the name of the input geometry (--input) for readers of the file."""
        from net.geometry import input_name
        from utils.config import saved_dict
        return {**saved_dict(self), 'input': input_name(self.train_augs)}


@dataclass(frozen=True)
class PredictConfig(DeviceOptions):
    """The options of predict.py, predict_tta.py and predict_se.py (each takes the fields it needs)."""
    snapshot: str | None = option(None, "snapshot file written by train.py, or an experiment directory (its best "
                                        "snapshot)", group='model', required=True)
    snapshot_dir: str | None = option(None, "EXP/snapshots of a run trained with --cycles > 1 (or EXP)", group='model',
                                      required=True)
    cycles: int = option(0, "use only the last N cycles (default: all)", group='model', range=(0, 10 ** 6))
    arch: str | None = option(None, "architecture; only a check: the snapshot knows its own", group='model',
                              choices=_names('net.models', 'ARCHITECTURES'))
    data_dir: str | None = option(None, "folder with train.csv, sample_submission.csv and the stacked .npy arrays "
                                        "(default: the one the snapshot was trained on, else ./data)", group='data')
    images: str | None = option(None, "predict this folder of 101x101 grayscale PNGs instead of the stacked test set: "
                                      "ids are the file names without .png, in sample_submission.csv's order when "
                                      "--data_dir is given and has one, else sorted; the default --out then ends in "
                                      ".<DIR's name>.csv", group='data', metavar='DIR')
    val_augs: str | None = option(None, "input transform (default: the snapshot's)", group='input',
                                  choices=_names('net.augmentations', 'VAL_AUGS'))
    val_transforms: str | None = option(None, "back-transform to 101x101 (default: the snapshot's)", group='input',
                                        choices=_names('net.augmentations', 'BACK_TRANSFORMS'))
    tta: str = option('null_hflip', "test-time augmentation set", group='input', choices=_names('net.tta', 'TTAS'))
    batch_size: int = option(64, "images per forward pass", group='input', range=(1, 1 << 16))
    th: float | str = option(0.5, "probability threshold in [0, 1] (default 0.5), or auto: the one optimize_threshold.py "
                                  "found for this snapshot", group='submission', type=probability_or_auto)
    min_size: int | str = option(0, "drop predicted salt regions smaller than this many pixels, or auto: the size "
                                    "optimize_threshold.py found for this snapshot (0 when none helped)",
                                 group='submission', type=int_or_auto, range=(0, 101 * 101))
    empty_below: float | None = option(None, "empty a predicted mask when the model's salt head (an image-level output "
                                             "of some architectures) gives the image a salt probability below P "
                                             "(default: off); the raw masks stay as predicted, the salt probabilities "
                                             "are saved beside them (.salt.npy)", group='submission', metavar='P',
                                       type=probability)
    out: str | None = option(None, "submission CSV path (default: EXPERIMENT/predictions/<snapshot>.csv)",
                             group='submission')


PREDICT_GROUPS = {'model': 'snapshot', 'data': 'data', 'input': 'input', 'submission': 'submission',
                  'device': 'device'}
# predict_se.py's own wording: its snapshots are each cycle's best, and auto is its own search.
ENSEMBLE_FOUND = ("a search on the chosen snapshots' averaged validation masks finds (saved as "
                  "EXP/snapshots/snapshot_ensemble.best.json)")
ENSEMBLE_HELPS = {
    'th': f"probability threshold in [0, 1] (default 0.5), or auto: the one {ENSEMBLE_FOUND}",
    'min_size': f"drop predicted salt regions smaller than this many pixels, or auto: the size {ENSEMBLE_FOUND} "
                f"(0 when none helped)",
    'out': "submission CSV path (default: EXPERIMENT/predictions/snapshot_ensemble.csv)"}


# The options --resume may change (the README's list); device and logging options are not part of the run.
RESUME_MAY_CHANGE = frozenset({'n_epochs', 'max_minutes', 'keep_snapshots'})


def validated(config=None, options=None):
    """The TrainConfig of the Python API (salt.train): `config` with `options` replacing its fields (or a
    TrainConfig of `options` alone), checked as the parser checks a command line. UserError (one line)."""
    from utils.cli import check_ranges
    from utils.config import ranges_of, value_type
    from utils.errors import UserError

    options = dict(options or {})
    if 'input' in options:
        from net.geometry import INPUTS
        name = options.pop('input')
        if name not in INPUTS:
            raise UserError(f"unknown input {name!r}; choose one of: {', '.join(INPUTS)}")
        options['train_augs'] = INPUTS[name]
    known = {f.name for f in dataclasses.fields(TrainConfig) if f.name != 'given'}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"{', '.join(unknown)}: not a TrainConfig field; the fields are train.py's options "
                        f"(python3 train.py --help)")
    if config is not None and not isinstance(config, TrainConfig):
        raise UserError(f"config must be a TrainConfig, not {type(config).__name__}")
    cfg = dataclasses.replace(config, **options) if config is not None else TrainConfig(**options)
    error = _Raises().error
    for f in dataclasses.fields(TrainConfig):
        v, kind = getattr(cfg, f.name), value_type(f.type)
        if v is None and f.default is None and f.name != 'experiment_dir':
            continue
        if f.name == 'experiment_dir' and not v:
            error("experiment_dir is required: the run's folder")
        if not _of_kind(v, kind):
            error(f"{f.name} must be of type {kind.__name__}; got {v!r}")
        choices = f.metadata.get('choices')
        if choices is not None:
            names = choices() if callable(choices) else choices
            if v not in names:
                error(f"unknown {f.name} {v!r}; choose one of: {', '.join(sorted(names))}")
    check_ranges(_Raises(), cfg, ranges_of(TrainConfig))
    cfg.check(error)
    return cfg


def _of_kind(value, kind):
    """Whether `value` is of a field's value type, as the parser would have made it (an int for a float field
    too; a bool is no number)."""
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


class _Raises:
    """What utils.cli.check_ranges calls on a value out of range: a UserError, as the parser's one line."""

    def error(self, message):
        from utils.errors import UserError
        raise UserError(message)
