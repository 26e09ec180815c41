"""stack_and_save.py, make_folds.py and evaluate.py, run as a user runs them."""
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT


def run(args, cwd=ROOT):
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True)


@pytest.mark.real_data
@pytest.mark.parametrize('from_utils', [False, True])
def test_stack_real_cut(real_cut, from_utils):
    script = 'stack_and_save.py' if from_utils else 'utils/stack_and_save.py'
    r = run([script, '--data_dir', str(real_cut)], cwd=ROOT / 'utils' if from_utils else ROOT)
    assert r.returncode == 0, r.stderr
    images = np.load(real_cut / 'train_images.npy')
    masks = np.load(real_cut / 'train_masks.npy')
    test = np.load(real_cut / 'test_images.npy')
    train = pd.read_csv(real_cut / 'train.csv', dtype=str, keep_default_na=False)
    sub = pd.read_csv(real_cut / 'sample_submission.csv', dtype=str)
    assert images.shape == (len(train), 101, 101) and images.dtype == np.uint8
    assert test.shape == (len(sub), 101, 101)
    assert set(np.unique(masks)) <= {0, 1}
    k = len(train) // 2
    i = train['id'].iloc[k]
    png = cv2.imread(str(real_cut / 'train' / 'images' / f'{i}.png'), cv2.IMREAD_UNCHANGED)
    assert (images[k] == png[..., 0]).all()
    m16 = cv2.imread(str(real_cut / 'train' / 'masks' / f'{i}.png'), cv2.IMREAD_UNCHANGED)
    assert (masks[k] == (m16 > 0)).all()
    j = sub['id'].iloc[-1]
    assert (test[-1] == cv2.imread(str(real_cut / 'test' / 'images' / f'{j}.png'), cv2.IMREAD_UNCHANGED)[..., 0]).all()


@pytest.mark.real_data
def test_make_folds_stratified_and_plain(real_cut):
    csv = real_cut / 'train.csv'
    assert run(['utils/make_folds.py', '--p', str(csv), '--n', '4']).returncode == 0
    f = pd.read_csv(real_cut / 'train_with_folds.csv', dtype={'id': str}, keep_default_na=False)
    src = pd.read_csv(csv, dtype={'id': str}, keep_default_na=False)
    assert list(f['id']) == list(src['id']) and list(f['rle_mask']) == list(src['rle_mask'])
    assert sorted(f['fold'].unique()) == [0, 1, 2, 3]
    assert f['fold'].value_counts().max() - f['fold'].value_counts().min() <= 1
    empty = f['rle_mask'] == ''
    per_fold = f[empty].groupby('fold').size()
    assert per_fold.max() - per_fold.min() <= 2  # coverage-stratified: empties spread evenly
    again = run(['utils/make_folds.py', '--p', str(csv), '--n', '4', '--out', str(real_cut / 'b.csv')])
    assert again.returncode == 0
    assert (pd.read_csv(real_cut / 'b.csv')['fold'] == f['fold']).all()  # seeded
    for mode in ('none', 'depth'):
        r = run(['utils/make_folds.py', '--p', str(csv), '--n', '3', '--stratify', mode, '--out', str(real_cut / f'{mode}.csv')])
        assert r.returncode == 0, r.stderr
        assert sorted(pd.read_csv(real_cut / f'{mode}.csv')['fold'].unique()) == [0, 1, 2]


def test_evaluate_matches_metric(tmp_path):
    from utils.rle import rle_encode
    rng = np.random.default_rng(0)
    ids = [f'{k:010x}' for k in range(20)]
    true = (rng.random((20, 101, 101)) < 0.4) & (rng.random((20, 1, 1)) < 0.6)
    pred = true ^ (rng.random(true.shape) < 0.05)
    pred[:3] = False
    pd.DataFrame({'id': ids, 'rle_mask': [rle_encode(m) for m in true]}).to_csv(tmp_path / 't.csv', index=False)
    # The submission may list the ids in another order and more of them.
    pd.DataFrame({'id': ids[::-1] + ['ffffffffff'], 'rle_mask': [rle_encode(m) for m in pred[::-1]] + ['']}).to_csv(
        tmp_path / 's.csv', index=False)
    r = run(['tools/evaluate.py', '--submission', str(tmp_path / 's.csv'), '--truth', str(tmp_path / 't.csv')])
    assert r.returncode == 0, r.stderr
    from utils.metric import score
    assert float(r.stdout.strip().splitlines()[-1].split()[-1]) == pytest.approx(score(pred, true), abs=1e-4)
    # The breakdown by salt coverage, bucket by bucket, before the score line.
    from utils.metric import coverage_breakdown, image_scores
    lines = r.stdout.strip().splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith('coverage'))
    rows = coverage_breakdown(image_scores(pred, true), true)
    assert head + 6 == len(lines) and sum(b['images'] for b in rows) == 20
    for line, b in zip(lines[head + 1:head + 5], rows):
        images, value, lost = line[9:].split()
        assert line[:9].strip() == b['name'] and int(images) == b['images']
        assert value == '-' if b['score'] is None else float(value) == pytest.approx(b['score'], abs=1e-4)
        assert float(lost.rstrip('%')) == pytest.approx(100 * b['lost'], abs=0.1)
    # A submission missing an id is an error, not a silent zero.
    pd.DataFrame({'id': ids[:5], 'rle_mask': [''] * 5}).to_csv(tmp_path / 'short.csv', index=False)
    r = run(['tools/evaluate.py', '--submission', str(tmp_path / 'short.csv'), '--truth', str(tmp_path / 't.csv')])
    assert r.returncode == 2 and 'no row for 15 ids' in r.stderr and 'Traceback' not in r.stderr


@pytest.mark.slow
def test_fold_avg_across_chunks_with_min_size_and_saved_mean(tmp_path):
    """predict_fold_avg.py over more masks than one chunk (2048): the CSV holds the rle of the float32
    mean above --th with small regions dropped, byte-exact, and --save_probs keeps that mean."""
    from utils.rle import rle_encode
    from utils.submission import remove_small
    n = 2100
    rng = np.random.default_rng(7)
    ids = [f'id{k:05d}' for k in range(n)]
    (tmp_path / 'sample_submission.csv').write_text('id,rle_mask\n' + ''.join(f'{i},1 1\n' for i in ids))
    coarse = rng.random((3, n, 1, 11, 11)).astype(np.float32)
    files = []
    for k in range(3):
        smooth = np.stack([cv2.resize(c[0], (101, 101), interpolation=cv2.INTER_LINEAR) for c in coarse[k]])
        files.append(tmp_path / f'f{k}.npy')
        np.save(files[-1], smooth.astype(np.float16))
    out = tmp_path / 'avg.csv'
    r = run(['predict_fold_avg.py', *map(str, files), '--data_dir', str(tmp_path), '--th', '0.55',
             '--min_size', '30', '--out', str(out), '--save_probs'])
    assert r.returncode == 0, r.stderr
    mean = sum(np.load(f).astype(np.float32) for f in files) / 3
    want = 'id,rle_mask\n' + ''.join(f'{i},{rle_encode(remove_small(m > 0.55, 30))}\n' for i, m in zip(ids, mean))
    assert out.read_text() == want
    assert any(rle_encode(m > 0.55) != rle_encode(remove_small(m > 0.55, 30)) for m in mean[:200])  # min_size mattered
    saved = np.load(out.with_suffix('.npy'))
    assert saved.dtype == np.float16 and np.array_equal(saved, mean.astype(np.float16))


# The folds make_folds.py wrote for the real train.csv (3200 rows of ../shared/tgs) before it was
# rewritten around scikit-learn: sha256 of the fold column joined by commas, per (stratify, n, seed).
# The same options must keep giving the same folds, or every earlier experiment's fold changes.
REAL_TRAIN_CSV_SHA256 = '6db8d69da4c2e335819c4a4705c021731ee137f3b02f421ef72ac8a9db492364'
RECORDED_FOLDS = {
    ('coverage', 5, 42): 'f352ec1b6895ca2e12b9328aa9af4dba5d129ce36bb3ba69a92853fa39443eac',
    ('coverage', 10, 42): 'f9087c01c5b73bde7d6e20e920fab76d54ab2d1cda98344e031ef092be9e1507',
    ('coverage', 4, 7): 'c877a539ee28a80ecada84e1d8be999e4dbb3f87679e22261ca8a1a99cc4fa60',
    ('depth', 5, 42): '09a8300d979d48cbf04994e09d285ed242d424119b9315f1deb374741aecf939',
    ('depth', 10, 42): 'c32c2428d52217801b6b23ab336761a0fbd9e4037aa0c187dab2e334b64bc0d7',
    ('none', 5, 42): '115cb0cf2562dbf8f651f3e862593b7b59248ba47ab3788e22103d2004ae79f8',
    ('none', 10, 42): 'f249f1a7eab9212325b61ae535a7c64bb6772d64acc57c219f131a4b6d7e9d6e',
}


def fold_column_sha256(csv):
    import hashlib
    folds = pd.read_csv(csv, dtype={'id': str}, keep_default_na=False)['fold']
    return hashlib.sha256(','.join(str(int(x)) for x in folds).encode()).hexdigest()


@pytest.mark.real_data
@pytest.mark.parametrize('stratify,n,seed', sorted(RECORDED_FOLDS))
def test_make_folds_reproduces_recorded_folds(real_dir, tmp_path, stratify, n, seed):
    import hashlib
    import shutil
    if hashlib.sha256((real_dir / 'train.csv').read_bytes()).hexdigest() != REAL_TRAIN_CSV_SHA256:
        pytest.skip(f"the recorded folds are those of ../shared/tgs/train.csv, not of {real_dir}")
    from utils.make_folds import main
    for name in ('train.csv', 'depths.csv'):
        shutil.copy(real_dir / name, tmp_path / name)
    out = main(['--p', str(tmp_path / 'train.csv'), '--n', str(n), '--stratify', stratify, '--seed', str(seed),
                '--out', str(tmp_path / 'folds.csv')])
    assert fold_column_sha256(out) == RECORDED_FOLDS[(stratify, n, seed)]


@pytest.mark.real_data
def test_make_folds_sklearn_method(real_dir, tmp_path):
    """--method sklearn: StratifiedKFold's folds on coverage classes / depth deciles, balanced and seeded."""
    import shutil

    from sklearn.model_selection import StratifiedKFold

    from utils.make_folds import coverage_classes, coverage_of, depth_bins
    for name in ('train.csv', 'depths.csv'):
        shutil.copy(real_dir / name, tmp_path / name)
    csv = tmp_path / 'train.csv'

    def folds(*opts, out='f.csv'):
        r = run(['utils/make_folds.py', '--p', str(csv), *opts, '--out', str(tmp_path / out)])
        assert r.returncode == 0 and r.stderr == '', r.stderr  # no sklearn warning about small classes
        return pd.read_csv(tmp_path / out, dtype={'id': str}, keep_default_na=False)

    f = folds('--n', '5', '--method', 'sklearn')
    classes = coverage_classes(coverage_of(f['rle_mask']))
    assert set(classes) == set(range(11)) and (classes[f['rle_mask'] == ''] == 0).all()
    # exactly scikit-learn's split of those classes, with the seed as its random_state
    want = np.empty(len(f), int)
    for k, (_, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=42).split(np.zeros(len(f)), classes)):
        want[va] = k
    assert (f['fold'].to_numpy() == want).all()
    counts = pd.crosstab(classes, f['fold'])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1  # every class spread evenly
    assert (f['fold'] == folds('--n', '5', '--method', 'sklearn', out='again.csv')['fold']).all()
    other_seed = folds('--n', '5', '--method', 'sklearn', '--seed', '1', out='seed1.csv')['fold']
    assert (other_seed != f['fold']).any()
    dealt = folds('--n', '5', out='dealt.csv')['fold']
    assert (dealt != f['fold']).any()  # not the default's folds: the default stays the dealing

    d = folds('--n', '4', '--stratify', 'depth', '--method', 'sklearn', out='depth.csv')
    z = d['id'].map(pd.read_csv(tmp_path / 'depths.csv').set_index('id')['z']).to_numpy(float)
    bins = depth_bins(z)
    assert sorted(set(bins)) == list(range(10))
    counts = pd.crosstab(bins, d['fold'])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1
    plain = folds('--n', '3', '--stratify', 'none', '--method', 'sklearn', out='none.csv')['fold']
    assert sorted(np.bincount(plain)) == [1066, 1067, 1067]
