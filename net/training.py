"""A training run, for train.py and train_border.py: options, config, the fold's arrays, model, loss and
optimizer, then net.loop.fit, and the summary it prints.

The entry points only parse and call `main`; a --resume run takes its config from the checkpoint.
"""
import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from net.augmentations import BACK_TRANSFORMS, VAL_AUGS, build_back_transform, build_val_aug
from net.geometry import INPUTS, PRESETS, input_preset, preset, run_inputs, tile_window
from net.loader import TrainBatches
from net.loop import fit
from net.losses import LOSSES, TileWindowLoss, build_loss
from net.models import ARCHITECTURES, build_model
from net.optim import OPTIMIZERS, SCHEDULERS, build_optimizer
from net.runtime import out_of_memory_is_user_error, peak_memory_gb, setup_runtime
from net.config import GROUPS, RESUME_MAY_CHANGE, TrainConfig
from net.small_crops import with_small_crops
from utils.checkpoint import read_checkpoint
from utils.cli import Parser, check_ranges, given_options
from utils.config import add_options, from_namespace, ranges_of
from utils.data import data_dir_checked, fold_indices, load_train_arrays, targets_of
from utils.errors import UserError
from utils.io import load_snapshot
from utils.recipes import STAGES, load_recipe
from utils.plots import ExperimentPlots, TensorBoardLog, summary_writer_class
from utils.run_folder import Experiment
from utils.snapshots import resolve_snapshot


DESCRIPTION = "Train a salt-segmentation model on one fold."
BORDER_DESCRIPTION = "Train a two-output (mask + border) model on one fold."


def registries():
    return dict(arch=ARCHITECTURES, loss=LOSSES, optimizer=OPTIMIZERS, scheduler=SCHEDULERS,
                train_augs=PRESETS, val_augs=VAL_AUGS, val_transforms=BACK_TRANSFORMS)


def build_parser(border=False):
    """train.py's (border=True: train_border.py's) parser, generated from TrainConfig's fields."""
    p = Parser(description=BORDER_DESCRIPTION if border else DESCRIPTION)
    r = p.add_argument_group('recipe')
    r.add_argument('--recipe', default=None, metavar='FILE',
                   help="take the options of one stage of a recipe file (recipes/*.toml: its [train] table, then the "
                        "stage's, and the stage's minutes as --max_minutes); the options given here win")
    r.add_argument('--stage', default='stage1', choices=STAGES,
                   help="the stage of --recipe (default stage1; stage3 adds its table to stage2's)")
    groups = add_options(p, TrainConfig, defaults=BORDER_DEFAULTS if border else None, groups=GROUPS)
    groups['input'].add_argument(
        '--input', dest='train_augs', type=input_preset, default=argparse.SUPPRESS, metavar='{' + ','.join(INPUTS) + '}',
        help="the input geometry: pad112 / pad128 (reflect-101 pad of the tile), resize128 (resize, mild augmentation), "
             "resize128_affine, resize202_pad256; it fixes the train augmentation, the validation input, its "
             "back-transform and the input size (default resize128)")
    groups['optimizer'].add_argument(
        '--opt', dest='optimizer', type=optimizer_family, default=argparse.SUPPRESS, metavar='{adam,sgd}',
        help="the optimizer by its plain name, at its usual rate (adam 1e-3, sgd 1e-2) unless --lr says: "
             "--opt adam --lr 3e-4 (the same choice as --optimizer)")
    groups['schedule'].add_argument(
        '--sched', dest='scheduler', default=argparse.SUPPRESS, choices=sorted(SCHEDULERS),
        help="the schedule (the same choice as --scheduler): cosine, none, or step_EVERY_FACTOR")
    g = groups['run'].add_mutually_exclusive_group()
    for name in ('resume', 'overwrite'):
        g.add_argument(f'--{name}', action='store_true', help=TrainConfig.__dataclass_fields__[name].metadata['help'])
    return p


# --opt NAME: the optimizer family at its usual rate (the registry's name; --lr replaces the rate).
OPTIMIZER_FAMILIES = {'adam': 'adam_1e-3', 'sgd': 'sgd_1e-2'}


def optimizer_family(name):
    if name not in OPTIMIZER_FAMILIES:
        raise argparse.ArgumentTypeError(f"unknown optimizer {name!r}; pick one of {', '.join(OPTIMIZER_FAMILIES)} "
                                         f"(or --optimizer NAME_RATE, e.g. adam_1e-4)")
    return OPTIMIZER_FAMILIES[name]


# train_border.py's own defaults.
BORDER_DEFAULTS = {'arch': 'wide_resnet_border', 'loss': 'boundary_bce'}


def parse_args(argv=None, border=False):
    """The TrainConfig of a command line (checked: ranges, then the checks across fields)."""
    p = build_parser(border)
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    ns = p.parse_args(argv)
    named = given_options(p, argv)
    given = named - {'recipe', 'stage'}
    if ns.recipe is not None:
        try:
            from_recipe = recipe_defaults(p, ns.recipe, ns.stage)
        except UserError as e:
            p.error(str(e))
        # the recipe's values (checked and converted) start the namespace; what the command line gives replaces them
        ns = p.parse_args(argv, namespace=argparse.Namespace(**from_recipe))
        given |= set(from_recipe)
    elif 'stage' in named:
        p.error("--stage names a stage of --recipe FILE; pass the recipe too, or leave --stage out")
    if not ns.small_crops >= 0:
        p.error(f"--small_crops is a share of the training images, 0 or more (e.g. 0.25); got {ns.small_crops}")
    if ns.keep_snapshots < 0:
        p.error(f"--keep_snapshots must be 0 (keep all) or more; got {ns.keep_snapshots}")
    for name in ('batch_size', 'val_batch_size', 'n_epochs', 'cycles'):
        if getattr(ns, name) is not None and getattr(ns, name) < 1:
            p.error(f"--{name} must be at least 1")
    config = from_namespace(TrainConfig, ns, border=border, given=frozenset(given))
    config.check(p.error)
    check_ranges(p, config, TRAIN_RANGES)
    return config


def recipe_defaults(p, path, stage):
    """{dest: value} of `stage` of the recipe file `path`, as parser `p` would parse them (checked by
    utils.recipes.load_recipe: one line naming the file and the key), the stage's minutes as max_minutes."""
    actions = p.actions()
    recipe = load_recipe(path, actions)
    out = {}
    for key, value in recipe.options(stage).items():
        action = actions[key]
        if action.nargs == 0:
            if value:
                out[action.dest] = True
            continue
        out[action.dest] = action.type(str(value)) if callable(action.type) else str(value)
    out['max_minutes'] = recipe.minutes[STAGES.index(stage)]
    return out


# Every numeric option of train.py and train_border.py, with its range (checked at parse time).
TRAIN_RANGES = ranges_of(TrainConfig)
RUNTIME = {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata['saved']} | {'experiment_dir', 'border'}


def check_resume_options(args, saved, exp):
    """On --resume: an option of the run given again with another value is one line naming it (the run goes
    on as it was made; only RESUME_MAY_CHANGE may differ). `saved` is the checkpoint's config dict."""
    new = build_config(args, quiet=True, given=args.given)
    for name in sorted(args.given - RUNTIME - RESUME_MAY_CHANGE):
        if name == 'folds_csv' or name == 'data_dir':
            same = str(Path(getattr(new, name)).resolve()) == str(Path(str(saved.get(name))).resolve())
        elif name in ('val_augs', 'val_transforms', 'init'):
            same = getattr(new, name) == saved.get(name)
        else:
            same = getattr(args, name) == saved.get(name)
        if not same:
            flag = f"--{name}"
            raise UserError(f"{flag} {getattr(args, name)} differs from the run's {saved.get(name)} "
                            f"({exp.config_path}): --resume goes on with the run's own options, and only --n_epochs, "
                            f"--max_minutes and --keep_snapshots may change; leave {flag} out, or train in another "
                            f"--experiment_dir")


def build_config(args, quiet=False, given=None):
    """The run's TrainConfig with every default that depends on others resolved: the epochs, the validation
    input and back-transform of the train augmentation, absolute paths, the --init snapshot, the command.
    Its record() is what the run saves. UserError (one line) for options that do not go together."""
    data_dir = Path(args.data_dir or 'data').resolve()
    folds_csv = Path(args.folds_csv).resolve() if args.folds_csv else data_dir / 'train_with_folds.csv'
    val_augs, val_transforms = run_inputs(args.train_augs, args.val_augs, args.val_transforms)
    if args.loss_region == 'center':
        tile_window(args.train_augs, val_augs)  # refused here, before anything is written
    if args.small_crops and not build_loss(args.loss).takes_weight:
        weighted = ', '.join(sorted(n for n in LOSSES if build_loss(n).takes_weight))
        raise UserError(f"--small_crops weighs its samples by 0.5, which --loss {args.loss} cannot apply; pass a "
                        f"loss that can ({weighted}) or drop --small_crops")
    own = preset(args.train_augs).val
    if val_augs != own and not quiet:
        print(f"warning: --train_augs {args.train_augs} places images like {own}, not like --val_augs "
              f"{val_augs}", file=sys.stderr)
    init = args.init
    if init and (given is None or 'init' in given):
        init = resolve_snapshot(init)
    return dataclasses.replace(
        args, n_epochs=args.n_epochs or 200, val_augs=val_augs, val_transforms=val_transforms,
        init=str(Path(init).resolve()) if init else None, data_dir=str(data_dir), folds_csv=str(folds_csv),
        experiment_dir=str(Path(args.experiment_dir).resolve()),
        command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]))


def resumed_config(args, resume, exp):
    """The TrainConfig of the run that --resume continues: the checkpoint's, with only what RESUME_MAY_CHANGE
    allows taken from `args` (any other option given with another value is refused)."""
    saved = resume['config']
    check_resume_options(args, saved, exp)
    config = TrainConfig.from_saved(saved)
    changes = {}
    if args.n_epochs and args.n_epochs != config.n_epochs:
        if config.cycles > 1:
            raise UserError(f"--n_epochs cannot change when resuming a --cycles {config.cycles} run (it would move "
                            f"the cycle boundaries); resume without --n_epochs")
        changes['n_epochs'] = max(args.n_epochs, resume['epoch'])
    if args.max_minutes:
        changes['max_minutes'] = args.max_minutes
    if args.keep_snapshots:  # e.g. after a full disk: keep fewer from now on
        changes['keep_snapshots'] = args.keep_snapshots
    return dataclasses.replace(config, **changes)


def load_fold(config):
    """Training and validation arrays of the configured fold (with border targets for the border model)."""
    data_dir = data_dir_checked(config.data_dir)
    images, masks = load_train_arrays(data_dir)
    tr, va = fold_indices(data_dir, config.folds_csv, config.fold)
    if config.limit:
        tr, va = tr[:config.limit], va[:max(1, config.limit // 4)]
    if len(tr) < config.batch_size:
        raise UserError(f"only {len(tr)} training images for --batch_size {config.batch_size}; lower --batch_size")
    return images[tr], masks[tr], images[va], targets_of(masks[va], config.border)


def training_arrays(config):
    """load_fold's arrays, with the --small_crops samples (made from the training part only) appended:
    (train images, train masks, per-image loss weights (N,) or None, val images, val targets)."""
    tr_images, tr_masks, va_images, va_targets = load_fold(config)
    weights = None
    if config.small_crops:
        n = len(tr_images)
        tr_images, tr_masks, weights, _ = with_small_crops(tr_images, tr_masks, config.small_crops, config.seed)
        print(f"--small_crops {config.small_crops}: {len(tr_images) - n} small-mask crops added to the {n} "
              f"training images")
    return tr_images, tr_masks, weights, va_images, va_targets


def main(argv=None, border=False):
    """train.py (border=True: train_border.py) on a command line."""
    return run(parse_args(argv, border))


def run(options):
    """Train the run a TrainConfig describes (parse_args's, or salt.train's checked one); the summary dict."""
    exp = Experiment(options.experiment_dir)
    try:
        return _train(options, exp)
    finally:
        exp.release()  # the directory's lock, which exp.prepare() took: at the end, after errors too


def _train(options, exp):
    if options.tensorboard:
        summary_writer_class()  # a missing package is an error now, not after the first epoch
    rt = setup_runtime(options.device, options.amp, options.channels_last, options.workers, options.threads,
                       options.loader)
    resume = None
    if options.resume:
        exp.check(resume=True, overwrite=False)
        resume = read_checkpoint(exp.checkpoint_path)
        config = resumed_config(options, resume, exp)
    else:
        config = build_config(options)
        exp.check(resume=False, overwrite=options.overwrite, data_dir=config.data_dir)
    if rt.distributed:
        torch.distributed.barrier()
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    tr_images, tr_masks, weights, va_images, va_targets = training_arrays(config)
    model = build_model(config.arch, pretrained=config.pretrained if not resume else 'none')
    if config.init and not resume:
        init_from(model, config.init, config.arch)
    loss_fn = run_loss(config)
    missing = set(getattr(loss_fn, 'requires', {'mask'})) - set(getattr(model, 'output_keys', {'mask'}))
    if missing:
        raise UserError(f"loss {config.loss} needs model outputs {sorted(missing)} that {config.arch} "
                        f"does not give; pick a loss for this architecture (e.g. BCE, lovasz)")
    if config.border and 'border' not in model.output_keys:
        raise UserError(f"{config.arch} has no border output; train_border.py needs --arch wide_resnet_border")
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.parameters(), lr=config.lr, fused=rt.cuda)
    if rt.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == 'cuda' else None)
    if options.compile:
        model = torch.compile(model, mode=None if options.compile == 'default' else options.compile)
    with out_of_memory_is_user_error(config.batch_size):
        train_set = TrainBatches(tr_images, tr_masks, config.train_augs, rt, with_border=config.border,
                                 weights=weights)
    val_aug, back = build_val_aug(config.val_augs), build_back_transform(config.val_transforms)
    if rt.is_main:
        # Only now, with every input checked, may --overwrite delete the earlier run.
        exp.prepare(resume=bool(resume), overwrite=options.overwrite)
        exp.write_config(config.record())
        print(f"training {config.arch} on fold {config.fold}: {len(tr_images)} train / {len(va_images)} val images, "
              f"{rt.device}{', ' + str(rt.amp_dtype).replace('torch.', '') if rt.amp_dtype else ''}"
              f"{f', {rt.world_size} processes' if rt.distributed else ''}")
    board = None
    if rt.is_main and options.tensorboard:
        board = TensorBoardLog(exp, resume['epoch'] if resume else 0)
    plots = make_plotter(exp, va_images, va_targets[:, 0], board) if rt.is_main else None
    try:
        with out_of_memory_is_user_error(config.batch_size):
            summary = fit(model, loss_fn, optimizer, train_set, va_images, va_targets, val_aug, back, rt, exp, config,
                          resume=resume, on_epoch_end=plots, log_terms=options.tensorboard)
    finally:
        if board is not None:
            board.close()
    summary['peak_gpu_memory_gb'] = peak_memory_gb(rt.device)
    if rt.is_main:
        exp.write_summary(summary)
        report(summary, exp)
    if rt.distributed:
        torch.distributed.destroy_process_group()
    return summary


def run_loss(config):
    """The run's loss: config.loss, on the tile's window only with loss_region 'center'."""
    loss_fn = build_loss(config.loss)
    if config.loss_region == 'center':
        loss_fn = TileWindowLoss(loss_fn, tile_window(config.train_augs, config.val_augs))
    return loss_fn


def init_from(model, path, arch):
    """Load every weight of a snapshot (the same architecture) into `model`."""
    snap = load_snapshot(path)
    if snap['arch'] != arch:
        raise UserError(f"--init {path} is a {snap['arch']} snapshot, not {arch}; pass --arch {snap['arch']} or another snapshot")
    model.load_state_dict(snap['model'])


def make_plotter(exp, images, masks, board=None):
    """The per-epoch callback: the PNGs of utils.plots, and the TensorBoard events when `board` is given."""
    plots = ExperimentPlots(exp, images, masks)
    if board is None:
        return plots

    def both(rows, probs, final=False):
        board(rows, probs, final=final)
        return plots(rows, probs, final=final)
    return both


def report(summary, exp):
    best = summary['best']
    lines = ["", "=" * 60,
             f"{summary['epochs_run']} epochs in {summary['minutes']:.1f} min"
             + (" (stopped by --max_minutes)" if summary['stopped_by_budget'] else "")]
    if best:
        lines.append(f"best epoch {best['epoch']}: val score {best['val_score']:.4f}, val IoU {best['val_iou']:.4f}, "
                     f"val loss {best['val_loss']:.4f}")
    if summary.get('peak_gpu_memory_gb') is not None:
        lines.append(f"peak GPU memory: {summary['peak_gpu_memory_gb']:.2f} GB")
    swa = summary.get('swa')
    if swa:
        lines.append(f"SWA of {swa['averaged']} epochs: val score {swa['val_score']:.4f}, val IoU {swa['val_iou']:.4f}; "
                     f"{swa['path']}")
    lines += [f"log:       {exp.log_path}", f"snapshots: {exp.snapshot_root}/",
              "next:      python3 optimize_threshold.py --masks_fn <a val_masks_*.npy of the snapshots>", "=" * 60]
    print('\n'.join(lines))

