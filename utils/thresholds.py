"""The threshold and small-region search on validation probabilities, for one fold or out of fold.

One fold (optimize_threshold.py --masks_fn M):
    M's stem + .thresholds.csv / .thresholds.png / .best.json beside M (predict*.py --th auto)
Several folds, one experiment each (optimize_threshold.py --masks_fn A B C, train_folds.py):
    every fold's validation images scored together: the out-of-fold threshold. Saved as
    PARENT/<name>.oof.best.json (+ .oof.thresholds.csv / .png), where PARENT is the folder that
    holds the experiments and <name> their common name without the fold number
    (experiments/gpu_fold0..4 -> experiments/gpu.oof.best.json; experiments/gpu/fold0..4 ->
    experiments/gpu/oof.best.json); predict_fold_avg.py --th auto finds it there.
A snapshot ensemble (predict_se.py --th auto): its snapshots' validation masks averaged, searched
like one fold's and saved as EXP/snapshots/snapshot_ensemble.best.json (+ .thresholds.csv / .png).
"""
import os
import re
from pathlib import Path

import numpy as np

from utils.checkpoint import find_config
from utils.data import fold_indices, load_train_arrays
from utils.errors import UserError
from utils.io import check_output, load_npy, run_folder_of, save_csv
from utils.metric import breakdown_table, coverage_breakdown, image_scores, threshold_image_scores, threshold_sweep
from utils.plots import threshold_curve
from utils.snapshots import best_json_path, resolve_snapshot, save_found, val_masks_path
from utils.submission import binarize, check_probs

# Small-region sizes tried at the best threshold (optimize_threshold.py --min_sizes).
MIN_SIZES = (10, 20, 40, 80, 160, 320)


def masks_file(path):
    """A validation masks file as given, or the best snapshot's of an experiment directory."""
    return val_masks_path(resolve_snapshot(path)) if Path(path).is_dir() else Path(path)


def true_masks_for(masks_fn, data_dir=None):
    """The fold's true masks (N, 101, 101) for a validation masks file, in the same order."""
    return validation_set_of(masks_fn, data_dir)[1]


def validation_set_of(masks_fn, data_dir=None):
    """(config, true masks (N, 101, 101), experiment root) of the experiment a masks file belongs to."""
    config, root = find_config(masks_fn, needs=('folds_csv', 'fold') + (() if data_dir else ('data_dir',)))
    if config is None:
        raise UserError(f"no train_config.json found above {masks_fn}; pass a val_masks_*.npy from an experiment's snapshots/")
    d = Path(data_dir or config['data_dir'])
    _, masks = load_train_arrays(d)
    _, va = fold_indices(d, config['folds_csv'], config['fold'])
    if config.get('limit'):
        va = va[:max(1, config['limit'] // 4)]
    return config, masks[va], root


def load_validation(masks_fn, data_dir=None, validation_set=None):
    """(probabilities, true masks, config, experiment root) of one fold, checked against each other.

    validation_set: validation_set_of(masks_fn) when the caller has it already (masks files of one
    experiment share it), so the training arrays are not read again.
    """
    probs = load_npy(masks_fn, 'validation masks', 'python3 train.py ... (it writes val_masks_*.npy beside each snapshot)')
    config, true, root = validation_set or validation_set_of(masks_fn, data_dir)
    check_probs(probs, masks_fn)
    if len(probs) != len(true):
        raise UserError(f"{masks_fn} has {len(probs)} masks but its fold has {len(true)} images; "
                        f"pass the val_masks file of this experiment's fold")
    return probs, true, config, root


def check_search_outputs(best_json):
    """The .best.json and its .thresholds.csv/.png may all be written (utils.io.check_output), before the first is.
    Inside a run folder the name must end in .best.json: the run's other files are train.py's (summary.json,
    say, which marks the run finished)."""
    run = run_folder_of(best_json)
    if run is not None and not Path(best_json).name.endswith('.best.json'):
        raise UserError(f"refusing to write {best_json}: it is inside the run folder {run}, whose files train.py "
                        f"writes; name it NAME.best.json, or pass a path outside the run")
    for p in (best_json, sidecar(best_json, 'thresholds.csv'), sidecar(best_json, 'thresholds.png')):
        check_output(p)


def sidecar(best_json, what):
    """<stem>.thresholds.csv / .png beside a .best.json (<stem>.best.json)."""
    best_json = Path(best_json)
    name = best_json.name[:-len('.best.json')] if best_json.name.endswith('.best.json') else best_json.stem
    return best_json.with_name(f'{name}.{what}')


def min_size_search(probs, true, th, sizes, base):
    """[(size, per-image scores)] for each size, and the best size (0 when none beats `base`)."""
    rows = [(m, image_scores(binarize(probs, th, m), true)) for m in sorted(set(sizes) - {0})]
    best, best_score = 0, base
    for m, s in rows:
        if s.mean() > best_score:
            best, best_score = m, float(s.mean())
    return rows, best, best_score


def print_breakdown(probs, true, th, min_size, size_rows):
    """Print the score at (th, min_size) broken down by the true masks' salt coverage."""
    scores = dict(size_rows).get(min_size) if min_size else None
    if scores is None:
        scores = image_scores(binarize(probs, th), true)
    print(f"by salt coverage, at threshold {th:.2f} and --min_size {min_size}:")
    print(breakdown_table(coverage_breakdown(scores, true)))


def single(masks_fn, data_dir, steps, min_sizes):
    """optimize_threshold.py on one fold: prints the curve, writes .thresholds.csv/.png and .best.json beside it."""
    probs, true, _, _ = load_validation(masks_fn, data_dir)
    record = search(probs, true, steps, min_sizes, best_json_path(masks_fn), {'masks': str(masks_fn)})
    return record['threshold'], record['score']


def search(probs, true, steps, min_sizes, best_json, extra=None):
    """The threshold, then the min_size at it, that score best on (probs, true): prints the curve, saves
    the record (plus `extra`) as `best_json` with <stem>.thresholds.csv/.png beside it; returns the record."""
    import pandas as pd

    check_search_outputs(best_json)
    ths = thresholds(steps)
    scores = threshold_sweep(probs, true, ths)
    every = max(1, (steps - 1) // 20)
    for t, s in list(zip(ths, scores))[::every]:
        print(f"threshold {t:.2f}  score {s:.4f}")
    b = int(np.argmax(scores))
    save_csv(sidecar(best_json, 'thresholds.csv'), pd.DataFrame({'threshold': ths, 'score': scores}))
    rows, best_size, best_size_score = min_size_search(probs, true, ths[b], min_sizes, float(scores[b]))
    for m, s in rows:
        print(f"threshold {ths[b]:.2f} --min_size {m:<4d} score {s.mean():.4f}")
    threshold_curve(sidecar(best_json, 'thresholds.png'), ths, scores, ths[b], sizes=rows, min_size=best_size)
    print_breakdown(probs, true, float(ths[b]), best_size, rows)
    record = {'threshold': round(float(ths[b]), 6), 'score': float(scores[b]), 'min_size': best_size,
              'score_with_min_size': best_size_score, **(extra or {})}
    save_found(best_json, record)
    print(f"best threshold {ths[b]:.2f}: score {scores[b]:.4f} (at 0.50: {np.interp(0.5, ths, scores):.4f})"
          + (f"; with --min_size {best_size}: {best_size_score:.4f}" if best_size else ""))
    return record


def ensemble(snapshots, best_json, data_dir=None, steps=101, min_sizes=MIN_SIZES):
    """The search on the mean of several snapshots' validation masks (one experiment's, so one fold):
    saves `best_json` (the snapshots listed in it) and returns its record."""
    masks = [val_masks_path(s) for s in snapshots]
    fold = validation_set_of(masks[0], data_dir)
    total = None
    for fn in masks:
        probs, true, _, _ = load_validation(fn, data_dir, fold)
        total = probs.astype(np.float32) if total is None else total + probs
    print(f"threshold search on the mean validation masks of {len(masks)} snapshots")
    return search(total / len(masks), true, steps, min_sizes, best_json,
                  {'snapshots': [str(s) for s in snapshots], 'masks': [str(m) for m in masks]})


def thresholds(steps):
    if steps < 2:
        raise UserError("--steps must be at least 2")
    return np.linspace(0.0, 1.0, steps)


def out_of_fold(masks_fns, data_dir=None, steps=101, min_sizes=MIN_SIZES, out=None):
    """Search the threshold and min_size on the validation images of every fold together.

    masks_fns: one validation masks file (or experiment directory) per fold. Prints the
    out-of-fold score beside each fold's own score at every threshold shown, saves
    `out` (default: default_oof_path of the experiments) and its .thresholds.csv/.png, and
    returns the saved record.
    """
    import pandas as pd

    if out is not None and Path(out).suffix != '.json':
        raise UserError(f"--out {out} must end in .json (e.g. oof.best.json)")
    if out is not None:
        check_search_outputs(out)  # before the masks are read
    folds = []
    seen = {}
    for given in masks_fns:
        fn = masks_file(given)
        probs, true, config, root = load_validation(fn, data_dir)
        key = (str(Path(data_dir or config['data_dir']).resolve()), str(Path(config['folds_csv']).resolve()), config['fold'])
        if key in seen:
            raise UserError(f"{given} and {seen[key]} validate on the same images (fold {config['fold']} of "
                            f"{config['folds_csv']}); pass one experiment per fold")
        seen[key] = given
        folds.append({'masks': fn, 'root': root, 'fold': config['fold'], 'probs': probs, 'true': true})
    ths = thresholds(steps)
    probs = np.concatenate([f['probs'] for f in folds])
    true = np.concatenate([f['true'] for f in folds])
    per_image = threshold_image_scores(probs, true, ths)
    scores = per_image.mean(0)
    bounds = np.cumsum([0] + [len(f['true']) for f in folds])
    curves = [per_image[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])]
    labels = [f"fold {f['fold']}" for f in folds]
    if len(set(labels)) < len(labels):
        labels = [f['root'].name for f in folds]
    b = int(np.argmax(scores))
    th = float(ths[b])

    width = max(8, *(len(x) for x in labels))
    print(f"threshold  {'out-of-fold':>11}  " + '  '.join(f'{x:>{width}}' for x in labels))
    every = max(1, (steps - 1) // 20)
    for k in list(range(0, steps, every)) + ([b] if b % every else []):
        print(f"{ths[k]:9.2f}  {scores[k]:11.4f}  " + '  '.join(f'{c[k]:{width}.4f}' for c in curves)
              + ('   <- best' if k == b else ''))
    rows, best_size, best_size_score = min_size_search(probs, true, th, min_sizes, float(scores[b]))
    for m, s in rows:
        print(f"{th:9.2f}  {s.mean():11.4f}  " + '  '.join(f'{s[a:e].mean():{width}.4f}' for a, e in zip(bounds[:-1], bounds[1:]))
              + f"   --min_size {m}")
    size_scores = dict((m, s) for m, s in rows)
    record = {
        'threshold': round(th, 6), 'score': float(scores[b]), 'min_size': best_size,
        'score_with_min_size': best_size_score, 'out_of_fold': True, 'images': int(len(true)),
        'masks': [str(f['masks']) for f in folds],
        'folds': [{'fold': f['fold'], 'experiment': str(f['root']), 'masks': str(f['masks']), 'images': int(len(f['true'])),
                   'score': float(c[b]),
                   'score_with_min_size': float(size_scores[best_size][a:e].mean()) if best_size else float(c[b]),
                   'own_threshold': round(float(ths[int(np.argmax(c))]), 6), 'own_score': float(c.max())}
                  for f, c, a, e in zip(folds, curves, bounds[:-1], bounds[1:])],
    }
    out = Path(out) if out else default_oof_path([f['root'] for f in folds])
    check_search_outputs(out)
    save_csv(sidecar(out, 'thresholds.csv'), pd.DataFrame({'threshold': ths, 'score': scores, **dict(zip(labels, curves))}))
    threshold_curve(sidecar(out, 'thresholds.png'), ths, scores, th, sizes=rows, min_size=best_size)
    print_breakdown(probs, true, th, best_size, rows)
    save_found(out, record)
    for label, f in zip(labels, record['folds']):
        print(f"{label}: {f['score']:.4f} at the out-of-fold threshold {th:.2f} "
              f"(its own best {f['own_score']:.4f} at {f['own_threshold']:.2f}; {f['images']} images)")
    print(f"saved {out}")
    print(f"best out-of-fold threshold {th:.2f}: score {scores[b]:.4f} over {len(true)} images of {len(folds)} folds "
          f"(at 0.50: {np.interp(0.5, ths, scores):.4f})"
          + (f"; with --min_size {best_size}: {best_size_score:.4f}" if best_size else ""))
    record['path'] = str(out)
    return record


def default_oof_path(roots):
    """Where the out-of-fold result of these experiment directories goes by default.

    PARENT/<name>.oof.best.json: PARENT holds the experiments, <name> is what their names have in
    common, without the fold number and a 'fold' before it (gpu_fold0, gpu_fold1 -> gpu;
    unet_fold0_bce, unet_fold1_bce -> unet_bce); plain PARENT/oof.best.json when nothing is left
    (fold0, fold1).
    """
    roots = [Path(r).resolve() for r in roots]
    parent = Path(os.path.commonpath(roots)) if len(roots) > 1 else roots[0].parent
    if parent in roots:  # one experiment (or one inside another): beside the outermost
        parent = parent.parent
    names = [r.name if r.parent == parent else '' for r in roots]
    head = os.path.commonprefix(names)
    tail = os.path.commonprefix([n[::-1] for n in names])[::-1]
    tail = tail[max(0, len(head) + len(tail) - min(map(len, names))):]  # no character in both
    head = re.sub(r'(?i)[_\-. ]*(fold)?[_\-. ]*\d*$', '', head)
    tail = re.sub(r'^\d*[_\-. ]*', '', tail)
    name = '_'.join(x for x in (head, tail) if x)
    path = parent / (f'{name}.oof.best.json' if name else 'oof.best.json')
    try:  # as short as the user's own paths when it lies below the working directory
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path
