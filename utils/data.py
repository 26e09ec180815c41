"""Reading the competition's files and the stacked arrays, and the training dataset."""
import csv
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError
from utils.io import load_npy

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
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; {fix}")
    try:
        frame = pd.read_csv(path, dtype={'id': str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable CSV ({str(e).splitlines()[0][:100]}); {fix}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{path} has no column(s) {', '.join(missing)}; {fix}")
    return frame


def read_columns(path, what, columns, fix):
    """The `columns` of a CSV as lists of strings, read with the csv module.

    For the training path, which needs only ids and folds: importing pandas would cost more start-up
    time than the whole read. Same errors as :func:`read_csv`, and a row with the wrong number of
    fields is an error too.
    """
    path = Path(path)
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
    return out


def data_dir_checked(data_dir):
    d = Path(data_dir)
    if not d.is_dir():
        raise UserError(f"data directory not found: {d}; pass --data_dir with the unzipped competition data "
                        f"(train.csv, sample_submission.csv, train/, test/)")
    return d


def train_ids(data_dir):
    fix = "it comes with the competition data (pass the right --data_dir)"
    return read_columns(Path(data_dir) / 'train.csv', 'train.csv', ['id'], fix)['id']


def test_ids(data_dir):
    """The test ids in sample_submission.csv's order (the submission's); each must be there once."""
    fix = "it comes with the competition data (pass the right --data_dir)"
    path = Path(data_dir) / 'sample_submission.csv'
    ids = read_columns(path, 'sample_submission.csv', ['id'], fix)['id']
    if len(set(ids)) != len(ids):
        seen = set()
        twice = next(i for i in ids if i in seen or seen.add(i))
        raise UserError(f"{path} lists id {twice} twice; {fix}, or remove the repeated row")
    return ids


def stack_hint(data_dir):
    return f"python3 utils/stack_and_save.py --data_dir {data_dir}"


def load_train_arrays(data_dir):
    """Stacked train images and masks, (N, 101, 101) uint8 each, in train.csv order."""
    hint = stack_hint(data_dir)
    images = load_npy(Path(data_dir) / 'train_images.npy', 'stacked train images', hint)
    masks = load_npy(Path(data_dir) / 'train_masks.npy', 'stacked train masks', hint)
    for name, arr in (('train_images.npy', images), ('train_masks.npy', masks)):
        if arr.ndim != 3 or arr.shape[1:] != (SIZE, SIZE):
            raise UserError(f"{Path(data_dir) / name} has shape {arr.shape}, not (N, 101, 101); make it again with: {hint}")
    if len(images) != len(masks):
        raise UserError(f"train_images.npy has {len(images)} rows but train_masks.npy {len(masks)}; make both again with: {hint}")
    n_ids = len(train_ids(data_dir))
    if len(images) != n_ids:
        # Arrays stacked from another train.csv would pair images with the wrong folds and ids.
        raise UserError(f"train_images.npy has {len(images)} images but train.csv lists {n_ids}; make it again with: {hint}")
    return images, masks


def load_test_images(data_dir, mmap=True):
    """Stacked test images (N, 101, 101) uint8 in sample_submission.csv order, and their ids."""
    hint = stack_hint(data_dir)
    images = load_npy(Path(data_dir) / 'test_images.npy', 'stacked test images', hint, mmap=mmap)
    ids = test_ids(data_dir)
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE):
        raise UserError(f"{Path(data_dir) / 'test_images.npy'} has shape {images.shape}, not (N, 101, 101); make it again with: {hint}")
    if len(images) != len(ids):
        raise UserError(f"test_images.npy has {len(images)} images but sample_submission.csv lists {len(ids)}; "
                        f"make it again with: {hint}")
    return images, ids


def fold_indices(data_dir, folds_csv, fold):
    """Row indices (into the train.csv order) of the training and validation parts of `fold`."""
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
    have = sorted(set(fold_of.tolist()))
    if fold not in have:
        raise UserError(f"fold {fold} is not in {folds_csv} (it has folds {have[0]}..{have[-1]}); pass --fold in that range")
    order = np.array([pos[i] for i in folds['id']], dtype=np.int64)
    is_val = fold_of == fold
    return np.sort(order[~is_val]), np.sort(order[is_val])


class TrainDataset:
    """Indexable training set: yields (image uint8 (1,S,S), targets uint8 (K,S,S)) after augmentation.

    targets' first channel is the mask; with `with_border`, the second is the mask's border,
    computed on the 101x101 mask before augmentation so that it moves with the image.
    """

    def __init__(self, images, masks, aug, with_border=False):
        self.images, self.masks, self.aug = images, masks, aug
        self.borders = None
        if with_border:
            self.borders = targets_of(masks, with_border=True)[:, 1]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        import torch
        image = np.asarray(self.images[i])
        mask = np.asarray(self.masks[i])
        if self.borders is None:
            out = self.aug(image=image, mask=mask)
            target = out['mask'][None]
        else:
            out = self.aug(image=image, masks=[mask, self.borders[i]])
            target = np.stack(out['masks'])
        return torch.from_numpy(np.ascontiguousarray(out['image'][None])), torch.from_numpy(np.ascontiguousarray(target))
