"""Whole commands against the least work they need, timed alternately in the same run.

Each part returns a list of result rows (dicts) for run_all.py's tables. All inputs are made
under --work (never in the real data folder): a stacked copy of the real data, synthetic
test arrays and folders of symlinked real PNGs, random-but-realistic probability masks.
"""
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import BENCH, PY, ROOT, interleaved, last_json, log, median, paired_ratio, run_measured, spread
from utils.snapshots import snapshots_in

TRAIN_ARCH = 'unet_lite'


# ---------------------------------------------------------------- inputs

def real_copy(work, real):
    """work/data: symlinks to the real PNG folders, copied CSVs, stacked arrays and 5 folds."""
    d = work / 'data'
    if (d / 'train_with_folds.csv').is_file() and (d / 'test_images.npy').is_file():
        return d
    for sub in ('train', 'test'):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for link, target in (('train/images', 'train/images'), ('train/masks', 'train/masks'), ('test/images', 'test/images')):
        if not (d / link).exists():
            os.symlink(real / target, d / link)
    for name in ('train.csv', 'sample_submission.csv', 'depths.csv'):
        (d / name).write_bytes((real / name).read_bytes())
    log(f"stacking the real data into {d}")
    run_measured([PY, 'utils/stack_and_save.py', '--data_dir', d])
    run_measured([PY, 'utils/make_folds.py', '--p', d / 'train.csv', '--n', '5'])
    return d


def test_set(work, data, n):
    """A folder with n test images (the real ones, repeated) and their sample_submission.csv."""
    if n == 1000:
        return data
    d = work / f'test_{n}'
    if (d / 'test_images.npy').is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    real = np.load(data / 'test_images.npy', allow_pickle=False)
    reps = np.arange(n) % len(real)
    np.save(d / 'test_images.npy', real[reps])
    with open(d / 'sample_submission.csv', 'w') as f:
        f.write('id,rle_mask\n' + ''.join(f't{k:07d},1 1\n' for k in range(n)))
    return d


def png_folder(work, real, n_train, n_test):
    """A competition-layout folder of n_train train images+masks and n_test test images, symlinked to real PNGs."""
    d = work / f'pngs_{n_train}_{n_test}'
    if (d / 'sample_submission.csv').is_file():
        return d
    import pandas as pd
    tr = pd.read_csv(real / 'train.csv', dtype=str, keep_default_na=False)['id'].tolist()
    te = pd.read_csv(real / 'sample_submission.csv', dtype=str, keep_default_na=False)['id'].tolist()
    for sub in ('train/images', 'train/masks', 'test/images'):
        (d / sub).mkdir(parents=True, exist_ok=True)
    tr_ids = [f'r{k:07d}' for k in range(n_train)]
    te_ids = [f's{k:07d}' for k in range(n_test)]
    for k, i in enumerate(tr_ids):
        src = tr[k % len(tr)]
        os.symlink(real / 'train' / 'images' / f'{src}.png', d / 'train' / 'images' / f'{i}.png')
        os.symlink(real / 'train' / 'masks' / f'{src}.png', d / 'train' / 'masks' / f'{i}.png')
    for k, i in enumerate(te_ids):
        os.symlink(real / 'test' / 'images' / f'{te[k % len(te)]}.png', d / 'test' / 'images' / f'{i}.png')
    with open(d / 'train.csv', 'w') as f:
        f.write('id,rle_mask\n' + ''.join(f'{i},\n' for i in tr_ids))
    with open(d / 'sample_submission.csv', 'w') as f:
        f.write('id,rle_mask\n' + ''.join(f'{i},1 1\n' for i in te_ids))
    return d


def realistic_probs(true_masks, n, seed):
    """float16 (n, 101, 101) probabilities shaped like salt: true masks (cycled) blurred by smooth noise."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    out = np.empty((n, 101, 101), np.float16)
    for a in range(0, n, 2048):
        m = torch.from_numpy(true_masks[np.arange(a, min(n, a + 2048)) % len(true_masks)]).float()[:, None]
        noise = F.interpolate(torch.rand(len(m), 1, 7, 7, generator=g), size=(101, 101), mode='bilinear',
                              align_corners=False)
        soft = F.avg_pool2d(m, 5, 1, 2, count_include_pad=False)
        out[a:a + len(m)] = (0.1 + 0.75 * soft + 0.5 * (noise - 0.5)).clamp(0, 1)[:, 0].numpy()
    return out


def ensure_snapshot(work, data, threads):
    """A unet_lite snapshot (from the train benchmark's run, or a one-epoch run made here)."""
    exp = work / 'exp_train'
    snaps = [s.path for s in snapshots_in(exp / 'snapshots')] if exp.is_dir() else []
    if snaps:
        return snaps[-1]
    exp = work / 'exp_snapshot'
    snaps = [s.path for s in snapshots_in(exp / 'snapshots')] if exp.is_dir() else []
    if not snaps:
        run_measured([PY, 'train.py', '--arch', TRAIN_ARCH, '--pretrained', 'none', '--n_epochs', 1, '--batch_size', 16,
                      '--limit', 32, '--data_dir', data, '--experiment_dir', exp, '--overwrite', *thread_args(threads)])
        snaps = [s.path for s in snapshots_in(exp / 'snapshots')]
    return snaps[-1]


def thread_args(threads):
    return ['--threads', threads] if threads else []


def env_for(threads):
    # the bare scripts read the torch thread count from the environment like any torch program
    return {'OMP_NUM_THREADS': str(threads)} if threads else {}


def row(name, cmd, bare, target=None, note='', **extra):
    """A result row from two lists of run results (pipeline command, bare baseline)."""
    r = {
        'name': name,
        'cmd_s': median([x['seconds'] for x in cmd]),
        'bare_s': median([x['seconds'] for x in bare]),
        'ratio': paired_ratio([x['seconds'] for x in cmd], [x['seconds'] for x in bare]),
        'ratio_spread': spread([a['seconds'] / b['seconds'] for a, b in zip(cmd, bare)]),
        'cpu_ratio': paired_ratio([x['cpu_seconds'] for x in cmd], [x['cpu_seconds'] for x in bare]),
        'cmd_peak_mb': max(x['peak_mb'] for x in cmd),
        'bare_peak_mb': max(x['peak_mb'] for x in bare),
        'target': target, 'note': note, 'repeats': len(cmd),
    }
    r.update(extra)
    if target is not None:
        r['holds'] = r['ratio'] <= target
    return r


# ---------------------------------------------------------------- parts

def bench_train(work, data, quick, repeats, threads):
    """train.py for N epochs vs bare_train.py doing the same epochs on the same images."""
    epochs, limit = (1, 96) if quick else (2, 1280)
    exp = work / 'exp_train'
    common = ['--arch', TRAIN_ARCH, '--n_epochs', epochs, '--batch_size', 16, '--limit', limit, '--data_dir', data]
    cmd = [PY, 'train.py', *common, '--loss', 'BCE', '--optimizer', 'adam_1e-4', '--pretrained', 'none',
           '--train_augs', 'train_128_v1', '--val_augs', 'val_128_resize', '--val_transforms', 'resize_from_any',
           '--experiment_dir', exp, '--overwrite', *thread_args(threads)]
    bare = [PY, BENCH / 'bare_train.py', *common]
    log(f"train: train.py vs bare loop, {TRAIN_ARCH}, {epochs} epoch(s), {limit} train + {limit // 4} val images, "
        f"{repeats} round(s)")
    res = interleaved({'cmd': lambda: run_measured(cmd, env=env_for(threads)),
                       'bare': lambda: run_measured(bare, env=env_for(threads))}, repeats)
    import pandas as pd
    logged = pd.read_csv(exp / 'logs' / 'log.csv')['seconds'].sum()
    bare_loop = median([last_json(b['stdout'])['loop_s'] for b in res['bare']])
    note = (f"{TRAIN_ARCH}, {epochs} ep x {limit // 16} batches of 16 + {limit // 4} val; "
            f"epochs inside train.py {logged:.1f}s vs bare loop {bare_loop:.1f}s")
    return [row('train.py', res['cmd'], res['bare'], 1.0, note, epochs=epochs, limit=limit,
                logged_epoch_s=logged, bare_loop_s=bare_loop)]


def bench_predict(work, data, quick, repeats, threads):
    """predict.py and predict_tta.py (null_hflip) vs one bare forward pass over the same test images."""
    n = 256 if quick else 1000
    d = test_set(work, data, n)
    snap = ensure_snapshot(work, data, threads)
    out = work / 'pred'
    out.mkdir(exist_ok=True)
    base = ['--snapshot', snap, '--data_dir', d, '--batch_size', 64, *thread_args(threads)]
    log(f"predict: predict.py, predict_tta.py --tta null_hflip vs bare forward, {n} images, {repeats} round(s)")
    res = interleaved({
        'predict': lambda: run_measured([PY, 'predict.py', *base, '--out', out / 'p.csv'], env=env_for(threads)),
        'tta': lambda: run_measured([PY, 'predict_tta.py', *base, '--tta', 'null_hflip', '--out', out / 't.csv'],
                                    env=env_for(threads)),
        'bare': lambda: run_measured([PY, BENCH / 'bare_predict.py', '--snapshot', snap, '--data_dir', d,
                                      '--batch_size', 64], env=env_for(threads)),
    }, repeats)
    bare_loop = median([last_json(b['stdout'])['loop_s'] for b in res['bare']])
    note = f"{n} test images, {TRAIN_ARCH}, batch 64; bare forward loop alone {bare_loop:.1f}s ({n / bare_loop:.0f} img/s)"
    return [row('predict.py', res['predict'], res['bare'], 1.15, note),
            row('predict_tta.py null_hflip', res['tta'], res['bare'], 2.2, note)]


def bench_stack(work, real, quick, repeats, threads):
    """stack_and_save.py vs a bare single-threaded cv2.imread loop over the same PNGs."""
    n_train, n_test = (400, 1800) if quick else (4000, 18000)
    d = png_folder(work, real, n_train, n_test)
    n_png = 2 * n_train + n_test
    log(f"stack: stack_and_save.py vs bare cv2.imread loop, {n_train + n_test} images ({n_png} PNG files), "
        f"{repeats} round(s)")
    res = interleaved({'cmd': lambda: run_measured([PY, 'utils/stack_and_save.py', '--data_dir', d]),
                       'bare': lambda: run_measured([PY, BENCH / 'bare_stack.py', '--data_dir', d])}, repeats)
    same = all(np.array_equal(np.load(d / f'{k}.npy', allow_pickle=False), np.load(d / f'bare_{k}.npy', allow_pickle=False))
               for k in ('train_images', 'train_masks', 'test_images'))
    note = (f"{n_train} train (image+mask) + {n_test} test = {n_png} PNGs (symlinks to real ones, warm cache); "
            f"arrays identical to the bare loop's: {'yes' if same else 'NO'}")
    return [row('stack_and_save.py', res['cmd'], res['bare'], 1.5, note, identical=same)]


def bench_fold_avg(work, data, quick, repeats):
    """predict_fold_avg.py over n masks x k files vs bare average + threshold + rle + write."""
    n, k = (4500, 2) if quick else (18000, 5)
    d = test_set(work, data, n)
    files = []
    true = np.load(data / 'train_masks.npy', allow_pickle=False)
    for f in range(k):
        p = work / f'fold_probs_{n}_{f}.npy'
        if not p.is_file():
            np.save(p, realistic_probs(true, n, seed=f))
        files.append(p)
    out = work / 'fold_avg'
    out.mkdir(exist_ok=True)
    log(f"fold average: predict_fold_avg.py vs bare, {k} files x {n} masks, {repeats} round(s)")
    res = interleaved({
        'cmd': lambda: run_measured([PY, 'predict_fold_avg.py', *files, '--th', '0.5', '--data_dir', d,
                                     '--out', out / 'avg.csv']),
        'bare': lambda: run_measured([PY, BENCH / 'bare_fold_avg.py', *files, '--th', '0.5', '--data_dir', d,
                                      '--out', out / 'bare.csv']),
    }, repeats)
    import pandas as pd
    a = pd.read_csv(out / 'avg.csv', dtype=str, keep_default_na=False)
    b = pd.read_csv(out / 'bare.csv', dtype=str, keep_default_na=False)
    same = a.equals(b)
    note = (f"{k} files x {n} float16 masks ({n * 101 * 101 * 2 / 2 ** 20:.0f} MB each); "
            f"CSV identical to the bare one's: {'yes' if same else 'NO'}")
    return [row('predict_fold_avg.py', res['cmd'], res['bare'], 1.5, note, identical=same)]


def bench_threshold(work, data, quick, repeats):
    """optimize_threshold.py on a full fold (101 thresholds), and threshold_sweep against a per-threshold loop."""
    from utils.data import fold_indices
    from utils.metric import score, threshold_sweep
    exp = work / 'exp_threshold'
    masks_fn = exp / 'snapshots' / 'val_masks_epoch_1.loss_0.5000.iout_0.500.npy'
    tr, va = fold_indices(data, data / 'train_with_folds.csv', 0)
    true = np.load(data / 'train_masks.npy', allow_pickle=False)[va]
    if not masks_fn.is_file():
        masks_fn.parent.mkdir(parents=True, exist_ok=True)
        np.save(masks_fn, realistic_probs(true, len(true), seed=7))
        (exp / 'train_config.json').write_text(json.dumps({
            'data_dir': str(data), 'folds_csv': str(data / 'train_with_folds.csv'), 'fold': 0, 'limit': 0}))
    log(f"threshold: optimize_threshold.py over {len(va)} masks, 101 thresholds; sweep vs loop in-process")
    runs = [run_measured([PY, 'optimize_threshold.py', '--masks_fn', masks_fn, '--steps', 101]) for _ in range(repeats)]
    probs = np.load(masks_fn, allow_pickle=False)
    ths = np.linspace(0, 1, 101)

    def t_sweep(k):
        def f():
            t0 = time.perf_counter()
            threshold_sweep(probs, true, ths[:k] if k < 101 else ths)
            return time.perf_counter() - t0
        return f

    def t_loop():
        t0 = time.perf_counter()
        [score(probs > t, true) for t in ths]
        return time.perf_counter() - t0

    timings = interleaved({'sweep101': t_sweep(101), 'sweep1': lambda: t_sweep(1)(), 'loop101': t_loop},
                          max(2, repeats))
    swept = threshold_sweep(probs, true, ths)
    looped = np.array([score(probs > t, true) for t in ths])
    same = bool(np.allclose(swept, looped, atol=1e-12))
    s101, s1, loop = (median(timings[k]) for k in ('sweep101', 'sweep1', 'loop101'))
    note = (f"{len(va)} val masks; threshold_sweep: 101 thresholds {s101 * 1e3:.0f} ms, 1 threshold "
            f"{s1 * 1e3:.0f} ms (x{s101 / s1:.2f} for 101x the thresholds: one pass); a loop of score(probs > t) "
            f"{loop * 1e3:.0f} ms (x{loop / s101:.1f}); same scores: {'yes' if same else 'NO'}")
    return [{'name': 'optimize_threshold.py (101 th)', 'cmd_s': median([r['seconds'] for r in runs]),
             'bare_s': loop, 'ratio': median([r['seconds'] for r in runs]) / loop, 'ratio_spread': '',
             'cpu_ratio': None, 'cmd_peak_mb': max(r['peak_mb'] for r in runs), 'bare_peak_mb': None,
             'target': None, 'holds': same and s101 / s1 < 3, 'note': note, 'repeats': repeats,
             'sweep101_s': s101, 'sweep1_s': s1, 'loop101_s': loop, 'identical': same,
             'target_text': 'one vectorised pass'}]


def bench_memory(work, data, quick, threads):
    """Peak RSS of predict.py over 18000 test images (fewer with --quick)."""
    n = 4500 if quick else 18000
    d = test_set(work, data, n)
    snap = ensure_snapshot(work, data, threads)
    log(f"memory: predict.py over {n} images (peak RSS)")
    r = run_measured([PY, 'predict.py', '--snapshot', snap, '--data_dir', d, '--batch_size', 64,
                      '--out', work / 'pred' / f'mem_{n}.csv', *thread_args(threads)], timeout=7200)
    return [{'name': f'predict.py memory ({n} images)', 'cmd_s': r['seconds'], 'bare_s': None, 'ratio': None,
             'ratio_spread': '', 'cpu_ratio': None, 'cmd_peak_mb': r['peak_mb'], 'bare_peak_mb': None,
             'target': None, 'holds': r['peak_mb'] < 3072, 'target_text': 'peak RSS < 3 GB', 'repeats': 1,
             'note': f"{n} images at {n / r['seconds']:.0f} img/s (whole command); peak RSS {r['peak_mb']:.0f} MB",
             'images': n}]
