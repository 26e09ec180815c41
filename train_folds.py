"""Train several folds with one command, then pick the out-of-fold threshold (and predict).

    python3 train_folds.py --folds 0-4 --experiment_dir experiments/gpu --arch unet_plain --n_epochs 60 ...

Every option that is not train_folds.py's own goes to train.py (python3 train.py --help lists
them). Fold k is one train.py run in its own experiment directory: EXP_fold{k}, or
--experiment_dir with {fold} replaced (experiments/gpu/fold{fold}). Its output streams to the
terminal and to EXP_fold{k}/train_folds.log.

Run the same command again after a stop or a crash: finished folds (summary.json) are skipped,
folds with a checkpoint are continued with train.py --resume, the others are started. With
several CUDA GPUs, folds run side by side, one per GPU (--gpus); otherwise one after another.

When every fold has finished, the validation masks of all folds are searched together for the
threshold and small-region size (optimize_threshold.py's out-of-fold search; saved as
PARENT/NAME.oof.best.json, e.g. experiments/gpu.oof.best.json, which predict_fold_avg.py --th
auto reads). With --predict, each fold's best snapshot then predicts the test images with
--tta and the folds' probabilities are averaged into one submission.
"""
import sys
from pathlib import Path

from net.fold_scheduler import Job, choose_gpus, failure_of, run_jobs
from net.stages import OWNED, fold_argv, parse_args, precheck  # noqa: F401  (the script's API)
from utils.checkpoint import find_config
from utils.cli import Parser, data_options, device_options
from utils.errors import UserError, run_cli
from utils.snapshots import best_snapshot_of
from utils.submission import fold_average
from utils.thresholds import default_oof_path, out_of_fold

ROOT = Path(__file__).resolve().parent


def main(argv=None):
    args = parse_args(argv)

    folds, dirs, states = precheck(args)
    gpus = choose_gpus(args.gpus, args.shared.device)
    slots = args.jobs or max(1, len(gpus))
    parallel = slots > 1 and len(folds) > 1

    jobs = []
    for k in folds:
        d, state = dirs[k], states[k]
        if state == 'finished':
            print(f"fold {k}: finished ({d / 'summary.json'}), skipped")
            continue
        title = {'resume': f"resuming {d}", 'restart': f"starting {d} again (its run ended before the first "
                 f"checkpoint)", 'new': f"training {d}"}[state]
        jobs.append(Job(k, [sys.executable, str(ROOT / 'train.py'), *fold_argv(args, k, dirs[k], state)],
                        d / 'train_folds.log', title))
    if jobs:
        run_jobs(jobs, gpus, slots, prefix_lines=parallel)
        check_jobs(jobs, failure_of, 'training', "fix it and run the same command again: finished folds are "
                                                 "skipped, the others resume")

    roots = [dirs[k] for k in folds]
    oof = default_oof_path(roots)
    print(f"\n== out-of-fold threshold over folds {args.folds} ==")
    record = out_of_fold([str(d) for d in roots], out=oof)
    if not args.predict:
        print(f"next: the same command with --predict (finished folds are skipped) for the fold-averaged submission; "
              f"or predict_tta.py each fold, then predict_fold_avg.py <their .npy> --th auto --min_size auto --oof {oof}")
        return record

    out = Path(args.out) if args.out else oof.with_name(oof.name.replace('oof.best.json', 'submission.csv'))
    return predict_folds(args, folds, dirs, record, gpus, slots, parallel, out)


def predict_folds(args, folds, dirs, record, gpus, slots, parallel, out):
    """Each fold's best snapshot predicts the test images with TTA; the fold average is the submission."""
    th, min_size = record['threshold'], record['min_size']
    passed = device_argv(args.shared)
    jobs, npys = [], []
    for k in folds:
        snap = best_snapshot_of(dirs[k])
        csv = dirs[k] / 'predictions' / f'{snap.name}.tta_{args.tta}.csv'
        npys.append(csv.with_suffix('.npy'))
        jobs.append(Job(k, [sys.executable, str(ROOT / 'predict_tta.py'), '--snapshot', str(snap), '--tta', args.tta,
                            '--th', str(th), '--min_size', str(min_size), '--out', str(csv), *passed],
                        dirs[k] / 'train_folds.log', f"predicting with {snap.name} and --tta {args.tta}"))
    print(f"\n== predicting the test images with {len(folds)} folds ==")
    run_jobs(jobs, gpus, slots, prefix_lines=parallel)
    check_jobs(jobs, failure_of, 'predicting', "fix it and run the same command again (training is done and skipped)")
    data_dir = args.shared.data_dir or find_config(npys[0], needs=('data_dir',))[0]['data_dir']
    share = fold_average(npys, data_dir, out, th, min_size, save_probs=True)
    print(f"submission: {out} (average of {len(folds)} folds with --tta {args.tta}, threshold {th:.2f}, "
          f"--min_size {min_size}; {share:.1%} with salt)")
    return out


def device_argv(shared):
    """The device and data options given on the command line, for the predict runs."""
    argv = []
    defaults = Parser(add_help=False, parents=[data_options(), device_options()]).parse_args([])
    for name, value in vars(shared).items():
        if value != getattr(defaults, name):
            argv += [f'--{name}'] if value is True else [f'--{name}', str(value)]
    return argv


def check_jobs(jobs, failure_of, doing, fix):
    """One line for the folds that failed (each with its log), exit 2 for a bad option, else 1."""
    failed = [j for j in jobs if j.code != 0]
    if not failed:
        return
    not_run = [j for j in jobs if j.code is None]
    failed = [j for j in failed if j.code is not None]
    parts = [f"fold {j.fold} failed {doing} ({failure_of(j)}; log {j.log})" for j in failed]
    if not_run:
        parts.append(f"not started: fold{'s' if len(not_run) > 1 else ''} {', '.join(str(j.fold) for j in not_run)}")
    msg = '; '.join(parts) + f"; {fix}"
    if all(j.code == 2 for j in failed):
        raise UserError(msg)
    print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == '__main__':
    run_cli(main)
