"""Reading the competition's files and the stacked arrays (the torch training dataset is net.loader.TrainDataset)."""
import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from utils.errors import UserError
from utils.io import guard, guard_data_dir, load_npy

SIZE = 101


def border_of(mask, width=2):
    """Contour band of the salt body: uint8 (H, W) in {0, 1} from a mask (H, W) (bool, {0,1} or {0,255}).

    The band is ``width`` px thick and straddles the salt/non-salt boundary: ``width - width // 2`` px on
    the salt side and ``width // 2`` px on the background side (default 2: one pixel each side, i.e. the
    3x3 morphological gradient). Replicated borders make the frame invisible: an empty or full mask has
    no border, and salt touching the image edge gets no band along that edge.
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if m.ndim != 2:
        raise ValueError(f"border_of expects a 2-D mask, got shape {m.shape}")
    if width < 1:
        raise ValueError(f"border width must be >= 1, got {width}")
    inner, outer = width - width // 2, width // 2
    band = m - cv2.erode(m, _square(inner), borderType=cv2.BORDER_REPLICATE)
    if outer:
        band |= cv2.dilate(m, _square(outer), borderType=cv2.BORDER_REPLICATE) - m
    return band


def _square(radius):
    # Square (chessboard) elements keep a diagonal boundary's band 8-connected.
    return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))


def targets_of(masks, with_border=False):
    """Training targets uint8 (N, K, H, W) from masks (N, H, W): the mask, and its border band when with_border."""
    masks = np.asarray(masks)
    targets = masks[:, None]
    if with_border:
        borders = np.stack([border_of(m) for m in masks]) if len(masks) else masks
        targets = np.concatenate([targets, borders[:, None]], axis=1)
    return targets


def read_csv(path, what, columns, fix):
    """Read a CSV that must have `columns` into a DataFrame; errors say which file and how to get it."""
    import pandas as pd
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not the CSV file of the {what}; {fix}")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {fix}")
    try:
        frame = pd.read_csv(path, dtype={'id': str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable CSV ({str(e).splitlines()[0][:100]}); {fix}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {', '.join(missing)}; {fix}")
    if 'id' in frame.columns:
        check_ids(frame['id'].tolist(), path, fix)
    guard(path)
    return frame


def bad_id(i):
    """Why `i` cannot be an image id (None if it can): ids name files, so they are plain names."""
    if not i.strip():
        return "an empty id"
    if '/' in i or '\\' in i or '\0' in i:
        return f"id {i!r}, which holds a path separator"
    if '..' in i:
        return f"id {i!r}, which holds '..'"
    return None


def check_ids(ids, path, fix):
    """Every id of a CSV (or a folder) is a plain, non-empty file name, and appears once."""
    seen = set()
    for line, i in enumerate(ids, start=2):
        why = bad_id(i)
        if why is not None:
            raise UserError(f"{path} has {why} (row {line}); {fix}, or correct that row")
        if i in seen:
            raise UserError(f"{path} lists id {i} twice (row {line}): the image would be trained and validated on "
                            f"as two; {fix}, or remove the repeated row")
        seen.add(i)


def read_columns(path, what, columns, fix):
    """The `columns` of a CSV as lists of strings, read with the csv module.

    For the training path, which needs only ids and folds: importing pandas would cost more start-up
    time than the whole read. Same errors as :func:`read_csv`, and a row with the wrong number of
    fields is an error too.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not the CSV file of the {what}; {fix}")
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {fix}")
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise UserError(f"{path} is not a readable CSV (no header line); {fix}")
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(f"{path} has no column(s) {', '.join(missing)}; {fix}")
            where = [header.index(c) for c in columns]
            out = {c: [] for c in columns}
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{path} is not a readable CSV (line {reader.line_num} has {len(row)} fields, "
                                    f"the header {len(header)}); {fix}")
                for c, k in zip(columns, where):
                    out[c].append(row[k])
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a readable CSV ({str(e).splitlines()[0][:100]}); {fix}") from None
    if 'id' in out:
        check_ids(out['id'], path, fix)
    guard(path)
    return out


def not_a_file(data_dir):
    """A data folder that is a plain file is named so (not as its missing parts)."""
    d = Path(data_dir)
    if d.exists() and not d.is_dir():
        raise UserError(f"--data_dir {d} is a file, not a folder; pass the folder of the unzipped competition data")
    return d


def data_dir_checked(data_dir):
    d = not_a_file(data_dir)
    if not d.is_dir():
        raise UserError(f"data directory not found: {d}; pass --data_dir with the unzipped competition data "
                        f"(train.csv, sample_submission.csv, train/, test/)")
    guard_data_dir(d)
    return d


def train_ids(data_dir):
    guard_data_dir(not_a_file(data_dir))
    fix = "it comes with the competition data (pass the right --data_dir)"
    return read_columns(Path(data_dir) / 'train.csv', 'train.csv', ['id'], fix)['id']


def test_ids(data_dir):
    """The test ids in sample_submission.csv's order (the submission's); each must be there once."""
    guard_data_dir(not_a_file(data_dir))
    fix = "it comes with the competition data (pass the right --data_dir)"
    path = Path(data_dir) / 'sample_submission.csv'
    return read_columns(path, 'sample_submission.csv', ['id'], fix)['id']  # unique: read_columns checks


def stack_hint(data_dir):
    return f"python3 utils/stack_and_save.py --data_dir {data_dir}"


def check_stacked(path, arr, hint, binary=False):
    """A stacked array is what stack_and_save.py writes: uint8 (N, 101, 101), masks 0/1; else one line."""
    if arr.ndim != 3 or arr.shape[1:] != (SIZE, SIZE):
        raise UserError(f"{path} has shape {arr.shape}, not (N, 101, 101); make it again with: {hint}")
    if arr.dtype != np.uint8:
        raise UserError(f"{path} holds {arr.dtype} values, not the uint8 that stack_and_save.py writes (was it "
                        f"overwritten?); make it again with: {hint}")
    if binary and len(arr) and arr.max() > 1:
        raise UserError(f"{path} holds values other than 0 and 1 (up to {int(arr.max())}): not stacked masks; "
                        f"make it again with: {hint}")


def load_train_arrays(data_dir):
    """Stacked train images and masks, (N, 101, 101) uint8 each, in train.csv order."""
    guard_data_dir(not_a_file(data_dir))
    hint = stack_hint(data_dir)
    images = load_npy(Path(data_dir) / 'train_images.npy', 'stacked train images', hint)
    masks = load_npy(Path(data_dir) / 'train_masks.npy', 'stacked train masks', hint)
    for name, arr in (('train_images.npy', images), ('train_masks.npy', masks)):
        check_stacked(Path(data_dir) / name, arr, hint, binary=name == 'train_masks.npy')
    if len(images) != len(masks):
        raise UserError(f"train_images.npy has {len(images)} rows but train_masks.npy {len(masks)}; make both again with: {hint}")
    n_ids = len(train_ids(data_dir))
    if len(images) != n_ids:
        # Arrays stacked from another train.csv would pair images with the wrong folds and ids.
        raise UserError(f"train_images.npy has {len(images)} images but train.csv lists {n_ids}; make it again with: {hint}")
    return images, masks


def load_test_images(data_dir, mmap=True):
    """Stacked test images (N, 101, 101) uint8 in sample_submission.csv order, and their ids."""
    guard_data_dir(not_a_file(data_dir))
    hint = stack_hint(data_dir)
    images = load_npy(Path(data_dir) / 'test_images.npy', 'stacked test images', hint, mmap=mmap)
    ids = test_ids(data_dir)
    check_stacked(Path(data_dir) / 'test_images.npy', images, hint)
    if len(images) != len(ids):
        raise UserError(f"test_images.npy has {len(images)} images but sample_submission.csv lists {len(ids)}; "
                        f"make it again with: {hint}")
    return images, ids


def data_dir_for(data_dir, snap):
    """The data folder to predict from: --data_dir, else the one the snapshot was trained on, else ./data."""
    return Path(data_dir or snap.get('config', {}).get('data_dir') or 'data')


# What to do about a bad PNG of the competition's folders (stack_and_save.py).
DOWNLOAD_FIX = "replace it with the file from the competition download"


def read_png(path, binary, fix=DOWNLOAD_FIX):
    """One 101x101 PNG as uint8 (H, W): a gray image, or 0/1 for a mask (any non-zero pixel is salt).

    A gray image stored as three equal channels (the competition's) is read as one; other colour
    images, other sizes and unreadable files are UserErrors that end in `fix`.
    """
    if not path.is_file():
        what = 'mask' if binary else 'image'
        raise UserError(f"{what} missing: {path}; every id of the CSV needs one (is --data_dir the unzipped data?)")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UserError(f"cannot decode {path} (corrupt or not a PNG); {fix}")
    if raw.ndim == 3:
        colour = raw[..., :3]
        if raw.shape[2] not in (3, 4) or (colour != colour[..., :1]).any():
            raise UserError(f"{path} is a colour image, not grayscale; {fix}")
        raw = raw[..., 0]
    if raw.shape != (SIZE, SIZE):
        raise UserError(f"{path} is {raw.shape[1]}x{raw.shape[0]}, not 101x101; {fix}")
    if binary:
        return (raw != 0).astype(np.uint8)
    if raw.dtype != np.uint8:
        raw = (raw >> 8).astype(np.uint8) if raw.dtype == np.uint16 else raw.astype(np.uint8)
    return raw


def stack_pngs(paths, binary, workers=4, desc=None, fix=DOWNLOAD_FIX):
    """Read PNGs (read_png) into one (N, 101, 101) uint8 array, decoding on `workers` threads."""
    out = np.empty((len(paths), SIZE, SIZE), np.uint8)

    def work(k):
        out[k] = read_png(paths[k], binary, fix)

    # cv2 releases the GIL while decoding, so threads decode in parallel without copies.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in tqdm(pool.map(work, range(len(paths)), chunksize=64), total=len(paths), desc=desc,
                      unit='png', leave=False, mininterval=0.5, disable=desc is None):
            pass
    return out


def image_folder(folder, order_dir=None, workers=4):
    """(images (N, 101, 101) uint8, ids) of a folder of PNGs, for predicting without stacked arrays.

    An id is a file name without .png. The order is sample_submission.csv's when `order_dir` has
    one (then every listed id needs a PNG and every PNG a row), else the ids sorted.
    """
    folder = Path(folder)
    fix = "pass --images with a folder of 101x101 grayscale PNGs"
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}; {fix}")
    found = {}
    for p in sorted(folder.iterdir()):
        if not (p.name.lower().endswith('.png') and p.is_file()):
            continue
        i = p.name[:-len('.png')]
        if not i.strip():
            raise UserError(f"{p} has no name before .png, so it gives no image id; rename or remove it")
        if i in found:
            raise UserError(f"{found[i].name} and {p.name} in {folder} give the same id {i}; keep one of them")
        found[i] = p
    if not found:
        raise UserError(f"{folder} holds no .png files; {fix}")
    if order_dir is not None and (Path(order_dir) / 'sample_submission.csv').is_file():
        ids = test_ids(order_dir)
        sub = Path(order_dir) / 'sample_submission.csv'
        missing = [i for i in ids if i not in found]
        if missing:
            raise UserError(f"{sub} lists {len(missing)} ids without a PNG in {folder} (first: {missing[0]}); pass "
                            f"the matching --images folder, or leave out --data_dir to predict the PNGs in sorted order")
        listed = set(ids)
        extra = sorted(i for i in found if i not in listed)
        if extra:
            raise UserError(f"{folder} has {len(extra)} PNGs that {sub} does not list (first: {extra[0]}.png); pass "
                            f"the matching --data_dir, or leave it out to predict the PNGs in sorted order")
    else:
        ids = sorted(found)
    images = stack_pngs([found[i] for i in ids], False, workers, f"read {folder.name}",
                        fix=f"replace or remove it, or {fix}")
    return images, ids


def _read_folds(data_dir, folds_csv):
    """The folds file checked against train.csv: (train.csv row of each file row, fold of each file row)."""
    ids = train_ids(data_dir)
    fix = f"make it with: python3 utils/make_folds.py --p {Path(data_dir) / 'train.csv'} --n 5"
    folds = read_columns(folds_csv, 'folds file', ['id', 'fold'], fix)
    pos = {i: k for k, i in enumerate(ids)}
    unknown = [i for i in folds['id'] if i not in pos]
    if unknown or len(folds['id']) != len(ids):
        raise UserError(f"{folds_csv} does not match {Path(data_dir) / 'train.csv'} "
                        f"({len(folds['id'])} vs {len(ids)} ids); {fix}")
    fold_of = np.empty(len(ids), dtype=np.int64)
    for k, v in enumerate(folds['fold']):
        try:
            fold_of[k] = int(v)
        except ValueError:
            raise UserError(f"{folds_csv} has a fold that is not a whole number ({v!r}); {fix}") from None
    return np.array([pos[i] for i in folds['id']], dtype=np.int64), fold_of


def check_folds(data_dir, folds_csv, folds, option='--folds', fold_of=None):
    """UserError (one line) for the first of `folds` the folds file does not have; `option` is what to change."""
    have = sorted(set((_read_folds(data_dir, folds_csv)[1] if fold_of is None else fold_of).tolist()))
    for fold in folds:
        if fold not in have:
            raise UserError(f"fold {fold} is not in {folds_csv} (it has folds {have[0]}..{have[-1]}); "
                            f"pass {option} in that range")


def fold_indices(data_dir, folds_csv, fold):
    """Row indices (into the train.csv order) of the training and validation parts of `fold`."""
    order, fold_of = _read_folds(data_dir, folds_csv)
    check_folds(data_dir, folds_csv, [fold], '--fold', fold_of)
    is_val = fold_of == fold
    return np.sort(order[~is_val]), np.sort(order[is_val])
