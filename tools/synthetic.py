"""Synthetic seismic images with salt masks, written in the TGS competition's layout.

The pipeline can then be demonstrated and tested end to end without the real data. Each image
is built like a (very) simplified seismic section:

- a layered reflectivity series, convolved with a Ricker wavelet, warped by a smooth fold
  field, a regional dip and zero to two faults with a throw;
- optionally a salt body (a level set of a dome, wall, blob or ellipse field, thresholded at the
  quantile that gives a drawn coverage), which drags the reflectors near it, replaces them inside
  by weak, chaotic, vertically streaky energy, and carries a strong wavelet along its boundary;
- band-limited additive noise, a smooth gain ramp, an optional blur, an optional water column,
  and a random global contrast and brightness; a few images are blank or nearly so.

The salt boundary reflection and the weak interior are the cues, as in the real data; the salt
itself has no brightness offset.
"""
import argparse
import csv
import json
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

import cv2
import numpy as np

from utils.errors import UserError, run_cli  # noqa: E402
from utils.rle import rle_encode  # noqa: E402

SIZE = 101
EMPTY_FRACTION = 0.4
# Share of all images that are uniformly black, as in the real training set (67 of 3200).
BLANK_FRACTION = 0.02
# Written into every data set made here: what lets --overwrite replace it.
MARKER = 'synthetic.json'
_IMAGE_FOLDERS = ('train/images', 'train/masks', 'test/images')
_OUTPUT_CSVS = ('train.csv', 'depths.csv', 'sample_submission.csv', 'test_truth.csv')

_Y, _X = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def ricker(t, period):
    """Ricker (Mexican-hat) wavelet at offsets `t` (pixels) for a peak period of `period` pixels."""
    a = (np.pi * np.asarray(t, dtype=np.float32) / period) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


def _smooth_noise(rng, shape, sigma_y, sigma_x):
    """Gaussian white noise blurred anisotropically and rescaled to unit standard deviation."""
    # Wide blurs are slow; blurring coarser noise and upsampling it looks the same and is cheap.
    step_y, step_x = max(1.0, sigma_y / 2.5), max(1.0, sigma_x / 2.5)
    coarse = (int(np.ceil(shape[0] / step_y)) + 1, int(np.ceil(shape[1] / step_x)) + 1)
    field = rng.standard_normal(coarse).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=float(sigma_x / step_x), sigmaY=float(sigma_y / step_y),
                             borderType=cv2.BORDER_REFLECT)
    if coarse != (shape[0] + 1, shape[1] + 1):
        field = cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    else:
        field = field[:shape[0], :shape[1]]
    return field / (field.std() + 1e-6)


def _layered_trace(rng, length):
    """Reflection coefficients of a stack of layers: sparse spikes with a few strong ones."""
    mean_thickness = rng.uniform(1.2, 4.0)
    count = int(length / mean_thickness * 2) + 8
    depths = np.cumsum(rng.exponential(mean_thickness, count) + 0.7)
    depths = depths[depths < length - 1]
    coeffs = rng.laplace(0.0, 1.0, depths.size)
    # A few strong, laterally continuous horizons make the sections readable, as in real data.
    coeffs *= np.where(rng.random(depths.size) < 0.06, rng.uniform(2.5, 5.0), 1.0)
    trace = np.zeros(length, np.float32)
    # Split each spike over its two neighbouring samples so horizons move smoothly under warping.
    lo = np.floor(depths).astype(np.int64)
    frac = (depths - lo).astype(np.float32)
    np.add.at(trace, lo, coeffs * (1 - frac))
    np.add.at(trace, lo + 1, coeffs * frac)
    return trace


def _vertical_ricker(image, period):
    """Convolve every column of `image` with a Ricker wavelet."""
    half = int(np.ceil(1.6 * period))
    kernel = ricker(np.arange(-half, half + 1), period).reshape(-1, 1)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _profile(rng, coord, amplitude, min_wavelength=40.0, max_wavelength=250.0):
    """A smooth random 1-D curve over `coord`: a sum of two or three sinusoids."""
    out = np.zeros_like(coord)
    for _ in range(rng.integers(2, 4)):
        wavelength = rng.uniform(min_wavelength, max_wavelength)
        out += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * coord / wavelength + rng.uniform(0, 2 * np.pi))
    return amplitude * out


def _salt_field(rng):
    """A field whose upper level sets are plausible salt bodies; its units are about pixels."""
    kind = rng.choice(['dome', 'dome', 'top', 'wall', 'blob', 'ellipse'])
    if kind == 'dome':
        # Salt rising from the bottom: a bump, a flank slope and wiggles on its top.
        centre = rng.uniform(-20, SIZE + 20)
        width = rng.uniform(15, 80)
        field = (_Y - rng.uniform(-0.6, 0.6) * (_X - 50)
                 + rng.uniform(0, 70) * np.exp(-((_X - centre) / width) ** 2)
                 - _profile(rng, _X, rng.uniform(0, 6)))
    elif kind == 'top':
        # The base of a salt sheet with sediments below it.
        field = -(_Y - rng.uniform(-0.5, 0.5) * (_X - 50) - _profile(rng, _X, rng.uniform(0, 8)))
    elif kind == 'wall':
        # A steep salt flank entering from the left or the right.
        side = rng.choice([-1.0, 1.0])
        field = side * (_X - rng.uniform(-0.8, 0.8) * (_Y - 50) - _profile(rng, _Y, rng.uniform(0, 8)))
    elif kind == 'blob':
        field = 30.0 * _smooth_noise(rng, (SIZE, SIZE), rng.uniform(12, 25), rng.uniform(12, 25))
    else:
        # Rotated ellipse, centred anywhere near the image so that it often touches an edge.
        cy, cx = rng.uniform(-10, SIZE + 10, 2)
        a, b = rng.uniform(15, 70, 2)
        angle = rng.uniform(0, np.pi)
        u = (_X - cx) * np.cos(angle) + (_Y - cy) * np.sin(angle)
        v = -(_X - cx) * np.sin(angle) + (_Y - cy) * np.cos(angle)
        field = -np.sqrt((u / a) ** 2 + (v / b) ** 2) * min(a, b)
    # Boundary roughness at two scales: gentle undulations and a slight jaggedness.
    field = field + rng.uniform(1, 4) * _smooth_noise(rng, (SIZE, SIZE), 5, 5)
    field = field + rng.uniform(0.1, 0.5) * _smooth_noise(rng, (SIZE, SIZE), 1.5, 1.5)
    return field.astype(np.float32)


def _salt_mask(rng):
    """A non-empty salt mask (uint8 0/1) with a coverage drawn from a skewed distribution."""
    if rng.random() < 0.04:
        return np.ones((SIZE, SIZE), np.uint8)
    # U^(1/0.65): median coverage ~0.34 and ~9% of bodies under 2%, close to the real set.
    coverage = float(np.clip(rng.random() ** (1 / 0.65), 1e-4, 0.995))
    field = _salt_field(rng)
    mask = (field > np.quantile(field, 1.0 - coverage)).astype(np.uint8)
    if not mask.any():
        mask.flat[int(np.argmax(field))] = 1
    return mask


def _signed_distance(mask):
    """Distance to the salt boundary in pixels, positive inside; the image frame is no boundary."""
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # Both transforms count from pixel centres; the boundary lies halfway between two pixels.
    return np.where(mask > 0, inside - 0.5, 0.5 - outside).astype(np.float32)


def _background(rng, salt_soft):
    """Folded, faulted, layered reflectors of unit RMS amplitude on the 101x101 grid."""
    stretch = rng.uniform(0.5, 1.6)
    dip = rng.normal(0, 0.35) if rng.random() < 0.85 else rng.uniform(-1.5, 1.5)
    disp = stretch * _Y + dip * (_X - 50)
    for _ in range(rng.integers(1, 4)):
        growth = 1.0 + rng.uniform(-0.6, 0.8) * _Y / SIZE
        disp += growth * _profile(rng, _X, rng.uniform(0, 10), 60, 400)
    disp += rng.uniform(0, 5) * _smooth_noise(rng, (SIZE, SIZE), 20, 20)
    # Small-scale wiggles keep the horizons from looking machine-drawn.
    disp += rng.uniform(0.2, 1.5) * _smooth_noise(rng, (SIZE, SIZE), rng.uniform(3, 8), rng.uniform(2, 6))
    # Salt pushes the layers around it upwards (drag).
    disp += rng.uniform(0, 25) * salt_soft
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        angle = rng.uniform(-0.7, 0.7)  # from the vertical: faults are steep
        x0, y0 = rng.uniform(0, SIZE, 2)
        side = (_X - x0) * np.cos(angle) - (_Y - y0) * np.sin(angle)
        # A hard step: any ramp would squeeze the whole throw into a bright streak along the fault.
        disp += rng.choice([-1, 1]) * rng.uniform(3, 20) * (side > 0)
    disp = disp.astype(np.float32)

    # Log-uniform: fine layering and zoomed-in, smooth sections are both common in real data.
    period = float(np.exp(rng.uniform(np.log(3.5), np.log(18.0))))
    margin = int(np.ceil(2 * period)) + 2
    offset = margin - float(disp.min())
    length = int(np.ceil(float(disp.max()) + offset)) + margin
    # Two traces blended with a slowly varying weight: reflector character changes laterally.
    weight = 0.5 + 0.5 * np.tanh(_smooth_noise(rng, (1, SIZE), 1, rng.uniform(10, 40)))
    trace_a = _layered_trace(rng, length)[:, None]
    trace_b = _layered_trace(rng, length)[:, None]
    weight = rng.uniform(0.1, 0.5) * weight
    source = (1 - weight) * trace_a + weight * trace_b
    # Lateral amplitude changes, floored so that no patch of sediment looks as quiet as salt.
    modulation = 1 + rng.uniform(0.2, 0.5) * _smooth_noise(rng, (length, SIZE), 6, rng.uniform(4, 30))
    source = source * np.maximum(modulation, 0.5)
    source = _vertical_ricker(source.astype(np.float32), period)
    section = cv2.remap(source, _X, disp + np.float32(offset), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
    return section / (section.std() + 1e-6), period


def make_sample(rng, with_salt):
    """One synthetic (image uint8 (101, 101), mask uint8 (101, 101) with values 0/1).

    rng: a numpy Generator, the only source of randomness. with_salt: whether the mask is
    non-empty. Without salt, a small share of images are all black like in the real data.
    """
    if not with_salt and rng.random() < BLANK_FRACTION / EMPTY_FRACTION:
        return np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    mask = _salt_mask(rng) if with_salt else np.zeros((SIZE, SIZE), np.uint8)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    drag = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 15.0)
    image, period = _background(rng, drag)

    if with_salt:
        # Inside salt: weak, chaotic energy with a vertical grain, and faint remnant reflectors.
        chaos = _smooth_noise(rng, (SIZE, SIZE), rng.uniform(3, 10), rng.uniform(0.8, 3))
        chaos = chaos + rng.uniform(0.2, 0.6) * _smooth_noise(rng, (SIZE, SIZE), 1.0, 1.0)
        chaos = rng.uniform(0.06, 0.2) * chaos / (chaos.std() + 1e-6) + rng.uniform(0.0, 0.08) * image
        image = image * (1 - soft) + chaos * soft
        if not mask.all():
            # A slight blur rounds off the pixel staircase of the mask in the reflection.
            sd = cv2.GaussianBlur(_signed_distance(mask), (0, 0), 0.8)
            # Normals close to vertical reflect most; steep flanks are dimmer, as in real sections.
            ny = np.abs(cv2.Sobel(sd, cv2.CV_32F, 0, 1, ksize=3)) / 8.0
            nx = np.abs(cv2.Sobel(sd, cv2.CV_32F, 1, 0, ksize=3)) / 8.0
            vertical = ny / (np.sqrt(nx ** 2 + ny ** 2) + 1e-6)
            strength = rng.uniform(2.2, 4.5) * (0.65 + 0.35 * vertical)
            strength *= np.clip(1 + 0.3 * _smooth_noise(rng, (SIZE, SIZE), 10, 10), 0.5, 1.6)
            polarity = 1.0 if rng.random() < 0.7 else -1.0
            wave_period = float(np.clip(period * rng.uniform(0.7, 1.3), 3.5, 12))
            image = image + polarity * strength * ricker(sd, wave_period)

    # Additive noise, band-limited like the signal so it is not trivially filtered out.
    noise = _vertical_ricker(rng.standard_normal((SIZE, SIZE)).astype(np.float32), period)
    noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.3, 1.5))
    image = image + rng.uniform(0.03, 0.2) * noise / (noise.std() + 1e-6)
    image = image + rng.uniform(0.0, 0.08) * rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    # Amplitudes decay or grow slowly across the section (processing gain, illumination).
    image = image * np.exp(rng.normal(0, 0.4) * (_Y - 50) / SIZE + rng.normal(0, 0.25) * (_X - 50) / SIZE)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.6, 2.0))

    if rng.random() < 0.05:
        # A water column: flat and featureless above the sea floor, never over salt.
        seabed = rng.uniform(5, 60) + rng.uniform(-0.3, 0.3) * (_X - 50) + _profile(rng, _X, 3)
        water = _Y < seabed
        if not (water & (mask > 0)).any():
            image = np.where(water, 0.0, image)
            image[np.abs(_Y - seabed) < 1.5] += 2.5

    contrast = rng.uniform(3, 10) if rng.random() < 0.03 else float(np.clip(rng.normal(36, 10), 10, 60))
    level = float(np.clip(rng.normal(122, 20), 60, 185))
    image = np.clip(level + contrast * image, 0, 255).astype(np.uint8)
    return image, mask


def _depth(rng, with_salt):
    """Depth in feet; salt is somewhat more frequent deeper, as in the real data."""
    return int(np.clip(round(rng.normal(530 if with_salt else 470, 200)), 51, 959))


def _make_ids(rng, count):
    """`count` distinct ids of 10 lowercase hex characters."""
    ids, seen = [], set()
    while len(ids) < count:
        new = rng.bytes(5).hex()
        if new not in seen:
            seen.add(new)
            ids.append(new)
    return ids


def _write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f, lineterminator='\n')
        writer.writerow(header)
        writer.writerows(rows)


def _replaceable(out):
    """Whether --overwrite may clear `out`: a data set this module made (its marker, or the test_truth.csv that
    only it writes), or a folder with none of a data set's CSVs and no id-named PNGs."""
    if (out / MARKER).is_file() or (out / 'test_truth.csv').is_file():
        return True
    if any((out / name).exists() for name in _OUTPUT_CSVS):
        return False
    return not any(_id_named(p) for k in _IMAGE_FOLDERS for p in (out / k).glob('*.png'))


def _id_named(path):
    return len(path.stem) == 10 and all(c in '0123456789abcdef' for c in path.stem)


def _clear_stale_pngs(folder):
    """Remove id-named PNGs of an earlier data set, so the folder matches the new csv files."""
    for path in folder.glob('*.png'):
        if _id_named(path):
            path.unlink()


def generate(out_dir, n_train=400, n_test=100, seed=0, overwrite=False):
    """Write a synthetic data set in the competition's layout into `out_dir`; return a summary.

    Besides the competition's files it writes test_truth.csv (id, rle_mask of the test images)
    so that a submission on the synthetic test set can be scored. Raises UserError if `out_dir`
    already holds a data set (one of its csv files) and `overwrite` is false.
    """
    out = Path(out_dir)
    if n_train < 1 or n_test < 0:
        raise UserError(f"need n_train >= 1 and n_test >= 0, got n_train={n_train}, n_test={n_test}")
    if seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; pick another --out")
    existing = [name for name in _OUTPUT_CSVS if (out / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{out} already holds a data set ({', '.join(existing)}); "
                        f"pass --overwrite (overwrite=True) to replace it, or pick another --out")
    if overwrite and not _replaceable(out):
        # --overwrite deletes id-named PNGs and the CSVs: never those of a data set made otherwise (the competition's)
        raise UserError(f"refusing to replace the data in {out}: tools/synthetic.py did not make it (no {MARKER} or "
                        f"test_truth.csv there); pick another --out")
    pngs = [k for k in _IMAGE_FOLDERS if any((out / k).glob('*.png'))]
    if pngs and not ((out / MARKER).is_file() or (out / 'test_truth.csv').is_file()):
        # images of no data set made here: the new ones would be mixed in among them
        raise UserError(f"{out / pngs[0]} already holds PNG images that tools/synthetic.py did not write; "
                        f"pick an empty or new --out")
    if pngs and not overwrite:
        raise UserError(f"{out} holds the images of an unfinished synthetic data set (no train.csv); "
                        f"pass --overwrite to replace it, or pick another --out")

    folders = {k: out / k for k in _IMAGE_FOLDERS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        if overwrite:
            _clear_stale_pngs(folder)
    if overwrite:
        # Drop the old csv files first: an interrupted run must not look like a complete set.
        for name in existing:
            (out / name).unlink()

    # The marker first: a run stopped while writing the images leaves a set that --overwrite may replace.
    (out / MARKER).write_text(json.dumps({'n_train': n_train, 'n_test': n_test, 'seed': seed}) + '\n')
    id_seq, sample_seq = np.random.SeedSequence(seed).spawn(2)
    ids = _make_ids(np.random.default_rng(id_seq), n_train + n_test)
    rng = np.random.default_rng(sample_seq)

    rles, depths = {}, {}
    for k, sample_id in enumerate(ids):
        with_salt = rng.random() >= EMPTY_FRACTION
        image, mask = make_sample(rng, with_salt)
        folder = folders['train/images'] if k < n_train else folders['test/images']
        cv2.imwrite(str(folder / f'{sample_id}.png'), cv2.merge([image, image, image]))
        if k < n_train:
            cv2.imwrite(str(folders['train/masks'] / f'{sample_id}.png'), mask.astype(np.uint16) * 65535)
        rles[sample_id] = rle_encode(mask)
        depths[sample_id] = _depth(rng, with_salt)

    train_ids, test_ids = ids[:n_train], ids[n_train:]
    _write_csv(out / 'depths.csv', ['id', 'z'], [(i, depths[i]) for i in ids])
    # Kaggle's sample submission predicts the single pixel "1 1" for every test image.
    _write_csv(out / 'sample_submission.csv', ['id', 'rle_mask'], [(i, '1 1') for i in test_ids])
    _write_csv(out / 'test_truth.csv', ['id', 'rle_mask'], [(i, rles[i]) for i in test_ids])
    # train.csv last: its presence marks a complete data set.
    _write_csv(out / 'train.csv', ['id', 'rle_mask'], [(i, rles[i]) for i in train_ids])

    def empty_fraction(subset):
        return sum(not rles[i] for i in subset) / len(subset) if subset else 0.0

    return {
        'out_dir': str(out),
        'n_train': n_train,
        'n_test': n_test,
        'train_empty_fraction': empty_fraction(train_ids),
        'test_empty_fraction': empty_fraction(test_ids),
        'seed': seed,
    }


def main(args=None):
    """Command line: write a synthetic data set and print what was written."""
    parser = argparse.ArgumentParser(
        description="Write a synthetic TGS-like salt data set (competition layout plus test_truth.csv).")
    parser.add_argument('--out', required=True, help="output directory (created if missing)")
    parser.add_argument('--n_train', type=int, default=400, help="number of labeled training images")
    parser.add_argument('--n_test', type=int, default=100, help="number of test images")
    parser.add_argument('--seed', type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument('--overwrite', action='store_true', help="replace a data set already in --out")
    opts = parser.parse_args(args)
    start = time.perf_counter()
    summary = generate(opts.out, opts.n_train, opts.n_test, opts.seed, opts.overwrite)
    seconds = time.perf_counter() - start
    out = Path(summary['out_dir'])
    print(f"train: {summary['n_train']} images + masks in {out / 'train'} "
          f"({summary['train_empty_fraction']:.0%} without salt)")
    print(f"test:  {summary['n_test']} images in {out / 'test'} "
          f"({summary['test_empty_fraction']:.0%} without salt, truth in test_truth.csv)")
    print(f"csv:   train.csv, depths.csv, sample_submission.csv, test_truth.csv in {out}")
    print(f"done in {seconds:.1f}s (seed {summary['seed']})")
    return summary


if __name__ == '__main__':
    run_cli(main)
