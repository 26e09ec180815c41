"""The options of train_folds.py and what can be checked of its folds before the first one trains: its
parser, each fold's train.py options, and the checks (precheck) that recipe.py runs for every stage too."""
from pathlib import Path

from net.tta import TTAS
from utils.cli import Parser, check_ranges, check_with, data_options, device_options
from utils.data import check_folds, train_ids
from utils.errors import UserError
from utils.folds import fold_dir, fold_state, parse_folds
from utils.io import FOLDS_CSV, check_prediction_pair, guard_data_dir
from utils.thresholds import default_oof_path

DESCRIPTION = "Train several folds with one command, then pick the out-of-fold threshold (and predict)."
# Options train_folds.py sets for each train.py run itself.
OWNED = ('--fold', '--experiment_dir', '--resume', '--overwrite')


def parse_args(argv=None):
    p = Parser(description=DESCRIPTION, allow_abbrev=False,
               epilog="Any other option is passed to every train.py run (e.g. --arch, --n_epochs, --data_dir, "
                      "--device; python3 train.py --help lists them). Run the same command again after a stop or a "
                      "crash: finished folds (summary.json) are skipped, folds with a checkpoint resume, the others "
                      "start. Each fold's output is also kept in EXP_fold{k}/train_folds.log. At the end, every "
                      "fold's validation masks are searched together for the out-of-fold threshold, saved as "
                      "PARENT/NAME.oof.best.json (e.g. experiments/gpu.oof.best.json), which predict_fold_avg.py "
                      "--th auto --min_size auto reads.")
    p.add_argument('--folds', required=True, help="folds to train: a range (0-4), a list (0,2,3) or one fold (3)")
    p.add_argument('--experiment_dir', required=True,
                   help="fold k goes to EXPERIMENT_DIR_fold{k}, or to EXPERIMENT_DIR with {fold} replaced by k")
    p.add_argument('--gpus', default='auto',
                   help="CUDA GPUs to run folds on, one fold per GPU at a time: auto (every visible GPU; with one "
                        "or none, folds run one after another), a list (0,1 or 0-3, numbered as the GPUs this "
                        "process sees), or none")
    p.add_argument('--jobs', type=int, default=0,
                   help="folds trained at once (default: one per GPU of --gpus; 1 on the CPU, where side-by-side "
                        "folds split the cores)")
    p.add_argument('--predict', action='store_true',
                   help="after the threshold search, predict the test images with each fold's best snapshot and "
                        "--tta, and write the fold average as the submission")
    p.add_argument('--tta', default='null_hflip', choices=sorted(TTAS), help="test-time augmentation for --predict")
    p.add_argument('--out', default=None,
                   help="submission CSV of --predict (default: PARENT/NAME.submission.csv beside the "
                        ".oof.best.json, e.g. experiments/gpu.submission.csv)")
    args, rest = p.parse_known_args(argv)
    for token in rest:
        name = token.split('=', 1)[0]
        if name in OWNED or (len(name) > 4 and any(o.startswith(name) for o in OWNED[1:])):
            p.error(f"{name} is set by train_folds.py for each fold (folds: --folds; directories: --experiment_dir; "
                    f"resuming is automatic); leave it out")
    if args.jobs < 0:
        p.error("--jobs must be at least 1")
    check_ranges(p, args, {'jobs': (0, 1024)})
    if args.out is not None and Path(args.out).suffix != '.csv':
        p.error(f"--out {args.out} must end in .csv")
    # The data and device options also matter to train_folds.py itself (GPUs, threshold search, predicting).
    shared = Parser(add_help=False, allow_abbrev=False, parents=[data_options(), device_options()])
    args.shared, _ = shared.parse_known_args(rest)
    args.train_args = rest
    return args


def fold_argv(args, k, d, state):
    """train.py's options for fold k: the passed ones with {fold} replaced (e.g. --init experiments/bce_fold{fold}),
    its directory and fold, and --resume or --overwrite as its state asks."""
    extra = {'resume': ['--resume'], 'restart': ['--overwrite'], 'new': [], 'finished': []}[state]
    return [*(a.replace('{fold}', str(k)) for a in args.train_args), '--experiment_dir', str(d), '--fold', str(k), *extra]


def precheck(args, what=''):
    """Everything that can be checked before the first fold trains: (folds, {fold: dir}, {fold: state}).

    Each fold's directory is a folder (or new) that holds a run of that fold; its train.py options pass
    train.py's own parser, and a fold to be resumed gets no option that differs from its run's; the
    submission of --predict is a path that may be written. recipe.py calls this for each of its stages.
    """
    from net.training import check_resume_options, parse_args as train_parse_args
    from utils.checkpoint import read_checkpoint
    from utils.run_folder import Experiment
    folds = parse_folds(args.folds)
    data = Path(args.shared.data_dir or 'data')
    if (data / 'train.csv').is_file():
        train_ids(data)  # its ids, checked (unique, plain names) before any fold reads them
    dirs = {k: fold_dir(args.experiment_dir, k) for k in folds}
    for d in dirs.values():
        Experiment(d).check_folder(data)
    states = {k: fold_state(dirs[k], k) for k in folds}
    to_train = {}  # (data folder, folds file) -> the folds still to train on that split
    for k in folds:
        if states[k] == 'finished':
            continue
        ns = check_with(train_parse_args, fold_argv(args, k, dirs[k], states[k]),
                        f"{what}train.py options of fold {k}", 'train.py')
        fold_data = Path(ns.data_dir or 'data')
        split = (fold_data, Path(ns.folds_csv) if ns.folds_csv else fold_data / FOLDS_CSV)
        to_train.setdefault(split, []).append(k)
        if states[k] == 'resume':
            exp = Experiment(dirs[k])
            try:
                check_resume_options(ns, read_checkpoint(exp.checkpoint_path)['config'], exp)
            except UserError as e:
                raise UserError(f"{what}fold {k}: {e}") from None
    for (fold_data, folds_csv), ks in to_train.items():
        if folds_csv.is_file() and (fold_data / 'train.csv').is_file():
            # a fold the split does not have fails here, not after the folds before it have trained
            check_folds(fold_data, folds_csv, ks)
    if args.predict:
        out = Path(args.out) if args.out else default_oof_path(list(dirs.values())).with_name(
            default_oof_path(list(dirs.values())).name.replace('oof.best.json', 'submission.csv'))
        guard_data_dir(args.shared.data_dir or 'data')
        check_prediction_pair(out)
    return folds, dirs, states
