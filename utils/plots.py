"""Pictures of a run: charts drawn with matplotlib (Agg, no display), image tiles with OpenCV.

    EXP/logs/learning_curve.png   losses, validation score and IoU, and learning rate per epoch
    EXP/logs/val_examples.png     the best and worst validation images with true and predicted outlines
    <masks>.thresholds.png        optimize_threshold.py's score against the probability threshold
    EXP/tensorboard/              with train.py --tensorboard: the per-epoch scalars and loss terms

All PNGs are rewritten atomically, so a viewer never shows half a file; train.py refreshes the
first two after the first epoch, then at most every 20 seconds, and after the last epoch.
"""
import shutil
import time

import cv2

import numpy as np

from utils.errors import UserError
from utils.io import save_png
from utils.metric import image_scores_from_counts

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK = (30, 30, 30)  # BGR, for the tiles
TRUE_COLOR, PRED_COLOR = (0, 215, 0), (255, 0, 255)  # green vs magenta: tells apart for most viewers
# The Tableau palette (matplotlib's default), which stays distinguishable for the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, RED, PURPLE, GRAY = '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#7f7f7f'
DPI = 100


def text(img, s, org, scale=0.45, color=BLACK, thickness=1, anchor='left'):
    """Draw `s` on a tile image with its baseline at org; anchor 'center' or 'right' aligns on org's x."""
    (w, _), _ = cv2.getTextSize(s, FONT, scale, thickness)
    x = org[0] - (w // 2 if anchor == 'center' else w if anchor == 'right' else 0)
    cv2.putText(img, s, (int(x), int(org[1])), FONT, scale, color, thickness, cv2.LINE_AA)
    return w


def _figure(width, height):
    """A matplotlib Figure of width x height pixels on the Agg canvas (pyplot and its global state untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig):
    """The drawn figure as a BGR image (H, W, 3) uint8, for save_png's atomic write."""
    fig.canvas.draw()
    return cv2.cvtColor(np.asarray(fig.canvas.buffer_rgba()), cv2.COLOR_RGBA2BGR)


def _values(rows, key):
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows], np.float64)


def _style(ax, title, ylabel):
    from matplotlib.ticker import MaxNLocator
    ax.set_title(title, fontsize=11)
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(True, color='#e4e4e4', linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curve(rows, title):
    """BGR image (400, 1300, 3) uint8: train and validation loss, validation score and IoU at threshold 0.5,
    and the learning rate against the epoch; dashed lines where a --cycles cycle begins."""
    fig = _figure(1300, 400)
    fig.suptitle(title, fontsize=12)
    loss_ax, val_ax, lr_ax = fig.subplots(1, 3)
    epochs = np.array([r['epoch'] for r in rows], np.float64)
    marker = 'o' if len(rows) <= 30 else None  # shows a one-epoch curve, and the epochs when there are few
    kw = dict(marker=marker, markersize=3.5, linewidth=1.6)

    loss_ax.plot(epochs, _values(rows, 'train_loss'), color=BLUE, label='train loss', **kw)
    loss_ax.plot(epochs, _values(rows, 'val_loss'), color=ORANGE, label='val loss', **kw)
    _style(loss_ax, 'loss', 'loss')

    scores = _values(rows, 'val_score')
    val_ax.plot(epochs, scores, color=GREEN, label='score', **kw)
    val_ax.plot(epochs, _values(rows, 'val_iou'), color=PURPLE, label='mean IoU', **kw)
    if np.isfinite(scores).any():
        b = int(np.nanargmax(scores))
        val_ax.plot(epochs[b], scores[b], 'o', markersize=11, markerfacecolor='none', markeredgecolor=RED,
                    markeredgewidth=2, label=f'best {scores[b]:.3f}, epoch {int(epochs[b])}')
    _style(val_ax, 'validation (threshold 0.5)', 'score / IoU')

    lrs = _values(rows, 'lr')
    lrs[~(lrs > 0)] = np.nan
    lr_ax.plot(epochs, lrs, color=GRAY, label='learning rate', **kw)
    if np.nanmax(lrs, initial=0) > 10 * np.nanmin(lrs, initial=np.inf):
        lr_ax.set_yscale('log')  # a schedule over decades
    else:
        lr_ax.ticklabel_format(axis='y', style='sci', scilimits=(0, 0))
    _style(lr_ax, 'learning rate', 'lr')

    # Snapshot ensembling restarts the schedule: mark where each cycle begins.
    cycles = [r.get('cycle') for r in rows]
    starts = [epochs[k] - 0.5 for k in range(1, len(rows)) if cycles[k] is not None and cycles[k] != cycles[k - 1]]
    for ax in (loss_ax, val_ax, lr_ax):
        for k, x in enumerate(starts):
            ax.axvline(x, color=GRAY, linestyle='--', linewidth=1, label='cycle start' if k == 0 else None)
        ax.legend(loc='best', fontsize=8.5, framealpha=0.9)
    if len(rows) == 1:
        for ax in (loss_ax, val_ax, lr_ax):
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    return _pixels(fig)


def _outline(mask, scale):
    """Contours (OpenCV point arrays) of a {0,1} mask (H, W) enlarged `scale` times."""
    big = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    return contours


def example_tiles(images, masks, probs, title, k=8, scale=2, th=0.5):
    """BGR image of the k best and k worst validation images by competition score.

    images (N, 101, 101) uint8, masks (N, 101, 101) {0,1}, probs (N, 101, 101) float. Each tile
    is the image enlarged `scale` times with the true outline in TRUE_COLOR and the predicted
    (prob > th) outline in PRED_COLOR; its caption is the image's index and score.
    """
    n = len(images)
    pred = np.asarray(probs).reshape(n, -1) > th
    true = np.asarray(masks).reshape(n, -1) != 0
    # count_nonzero on bool rows is several times faster than image_scores' sums: this runs every epoch.
    inter = np.count_nonzero(pred & true, axis=1)
    n_pred, n_true = np.count_nonzero(pred, axis=1), np.count_nonzero(true, axis=1)
    scores = image_scores_from_counts(inter, n_pred + n_true - inter, n_true, n_pred)
    # Among equal scores, show the images with the most salt: an empty image scoring 1 teaches
    # little, and a large miss is the failure most worth seeing.
    salt = n_true + n_pred
    worst = np.lexsort((-salt, scores))[:min(k, n // 2)]
    rest = np.setdiff1d(np.arange(n), worst)  # with few images, no image is in both rows
    best = rest[np.lexsort((-salt[rest], -scores[rest]))][:k]
    rows = [(name, idx) for name, idx in (('best', best), ('worst', worst)) if len(idx)]
    side, gap, cap, label_w, head = 101 * scale, 6, 20, 58, 62
    W = label_w + k * (side + gap) + gap
    H = head + len(rows) * (side + cap + gap) + 8
    img = np.full((H, W, 3), 255, np.uint8)
    text(img, title, (W // 2, 24), 0.55, BLACK, anchor='center')
    lx = W // 2 - 110
    for s, color, dx in (('true mask', TRUE_COLOR, 0), (f'predicted (p > {th:g})', PRED_COLOR, 120)):
        cv2.line(img, (lx + dx, 44), (lx + dx + 22, 44), color, 2, cv2.LINE_AA)
        text(img, s, (lx + dx + 28, 49), 0.45, BLACK)
    pred = pred.reshape(n, 101, 101)
    for r, (name, idx) in enumerate(rows):
        y = head + r * (side + cap + gap)
        text(img, name, (8, y + side // 2 + 5), 0.5, BLACK)
        for c, i in enumerate(idx):
            x = label_w + gap + c * (side + gap)
            tile = cv2.resize(np.asarray(images[i]), (side, side), interpolation=cv2.INTER_LINEAR)
            tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
            cv2.drawContours(tile, _outline(masks[i], scale), -1, TRUE_COLOR, 2, cv2.LINE_AA)
            cv2.drawContours(tile, _outline(pred[i], scale), -1, PRED_COLOR, 1, cv2.LINE_AA)
            img[y:y + side, x:x + side] = tile
            text(img, f"#{i}  score {scores[i]:.2f}", (x + side // 2, y + side + 15), 0.42, BLACK, anchor='center')
    return img


class ExperimentPlots:
    """Per-epoch callback for train.py: refreshes EXP/logs/learning_curve.png and val_examples.png.

    images: validation images (N, 101, 101) uint8; masks: their true masks (N, 101, 101) {0,1}.
    Drawn after the first epoch, then at most once per `every` seconds, and after the last epoch:
    on a GPU an epoch can take well under a second, and drawing every one would leave it idle.
    """

    def __init__(self, exp, images, masks, every=20.0):
        self.exp = exp
        self.images = np.asarray(images)
        self.masks = np.asarray(masks) != 0
        self.name = exp.root.resolve().name
        self.every = every
        self.drawn_at = None

    def __call__(self, rows, probs, final=False):
        """rows: the log so far (dicts with epoch, cycle, train_loss, val_loss, val_iou, val_score, lr,
        seconds, terms); probs: this epoch's validation probabilities (N, 101, 101); final: the run's last
        epoch (always drawn). Returns whether it drew."""
        now = time.monotonic()
        if not final and self.drawn_at is not None and now - self.drawn_at < self.every:
            return False
        self.drawn_at = now
        logs = self.exp.root / 'logs'
        last = rows[-1]
        title = (f"{self.name}, epoch {last['epoch']}: best and worst of {len(self.images)} validation images "
                 f"(score {last['val_score']:.3f})")
        with self.exp.writing():
            save_png(logs / 'learning_curve.png', learning_curve(rows, f"{self.name}: learning curve after epoch {last['epoch']}"))
            save_png(logs / 'val_examples.png', example_tiles(self.images, self.masks, probs, title))
        return True


def summary_writer_class():
    """torch's SummaryWriter; a UserError naming the install when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package; pip install tensorboard, "
                        "or leave out --tensorboard") from None
    return SummaryWriter


# TensorBoard tag of each log column; the loss's parts go under loss_terms/.
TB_TAGS = {'train_loss': 'loss/train', 'val_loss': 'loss/val', 'val_iou': 'val/iou', 'val_score': 'val/score',
           'lr': 'lr', 'seconds': 'time/epoch_seconds'}


class TensorBoardLog:
    """Per-epoch callback for train.py --tensorboard: the log's scalars and the loss's parts
    (net.losses) of every epoch, step = epoch, as event files in EXP/tensorboard/.

    resume_epoch: the checkpoint's epoch when the run resumes (0 for a new run, whose directory
    starts empty). Events from that epoch on are purged and rewritten from the checkpoint's rows,
    so that those of epochs the killed run logged after its checkpoint disappear. The writer opens
    at the first call and is flushed after every epoch; close() at the end of the run.
    """

    def __init__(self, exp, resume_epoch=0):
        self.writer_class = summary_writer_class()
        self.exp = exp
        self.dir = exp.root / 'tensorboard'
        self.resume_epoch = resume_epoch
        self.writer = None
        self.written = 0

    def _open(self):
        had_events = self.dir.is_dir() and any(self.dir.glob('events.out.tfevents.*'))
        if not self.resume_epoch:
            shutil.rmtree(self.dir, ignore_errors=True)  # a replaced run's events
        elif had_events:
            self.written = self.resume_epoch - 1
            self.writer = self.writer_class(str(self.dir), purge_step=self.resume_epoch)
            return
        self.writer = self.writer_class(str(self.dir))

    def __call__(self, rows, probs=None, final=False):
        """rows: the log so far (as ExperimentPlots gets it); writes the epochs not written yet."""
        with self.exp.writing():
            self._write(rows)
        return True

    def _write(self, rows):
        if self.writer is None:
            self._open()
        for r in rows:
            if r['epoch'] <= self.written:
                continue
            for key, tag in TB_TAGS.items():
                if r.get(key) is not None:
                    self.writer.add_scalar(tag, float(r[key]), r['epoch'])
            for name, v in sorted((r.get('terms') or {}).items()):
                self.writer.add_scalar(f'loss_terms/{name}', float(v), r['epoch'])
            self.written = r['epoch']
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def threshold_curve(path, thresholds, scores, best, sizes=None, min_size=0):
    """Write a PNG of the validation score against the probability threshold, marking `best`.

    thresholds, scores: 1-D arrays of the same length; best: the chosen threshold. sizes: optionally
    the small-region sizes searched at `best`, as (size, score or per-image scores) pairs; a second panel shows the
    score against the size, from no removal (the best threshold's score) on, and marks `min_size`.
    """
    thresholds, scores = np.asarray(thresholds, np.float64), np.asarray(scores, np.float64)
    b = int(np.argmin(np.abs(thresholds - best)))
    # (0, the best threshold's score): no region removed, the point the sizes are compared with
    sizes = [(0, float(scores[b]))] + sorted((int(m), float(np.mean(s))) for m, s in sizes if int(m) > 0) if sizes else []
    fig = _figure(1140 if sizes else 720, 440)
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if sizes else [fig.add_subplot()]
    ax = axes[0]
    ax.plot(thresholds, scores, color=BLUE, linewidth=1.8, marker='o' if len(thresholds) <= 30 else None,
            markersize=4, label='score')
    ax.axvline(0.5, color=GRAY, linestyle=':', linewidth=1.2, label=f'at 0.50: {np.interp(0.5, thresholds, scores):.4f}')
    ax.axvline(thresholds[b], color=RED, linestyle='--', linewidth=1.2)
    ax.plot(thresholds[b], scores[b], 'o', markersize=11, markerfacecolor='none', markeredgecolor=RED,
            markeredgewidth=2, label=f'best {thresholds[b]:.2f}: {scores[b]:.4f}')
    ax.set_xlim(0, 1)
    ax.set_title(f'validation score against threshold: best {scores[b]:.4f} at {thresholds[b]:.2f}', fontsize=11)
    ax.set_xlabel('probability threshold (salt where p > threshold)')
    ax.set_ylabel('score')
    ax.grid(True, color='#e4e4e4', linewidth=0.8)
    ax.legend(loc='best', fontsize=9, framealpha=0.9)
    if sizes:
        ax = axes[1]
        xs = np.arange(len(sizes))
        ys = np.array([s for _, s in sizes])
        ax.plot(xs, ys, color=BLUE, marker='o', markersize=4, linewidth=1.8)
        k = next((i for i, (m, _) in enumerate(sizes) if m == min_size), 0)
        ax.plot(xs[k], ys[k], 'o', markersize=11, markerfacecolor='none', markeredgecolor=RED, markeredgewidth=2,
                label=f'chosen: {"none" if sizes[k][0] == 0 else sizes[k][0]} ({ys[k]:.4f})')
        ax.set_xticks(xs, ['none' if m == 0 else str(m) for m, _ in sizes])
        ax.set_title(f'small regions removed at threshold {thresholds[b]:.2f}', fontsize=11)
        ax.set_xlabel('--min_size (pixels)')
        ax.set_ylabel('score')
        ax.grid(True, color='#e4e4e4', linewidth=0.8)
        ax.legend(loc='best', fontsize=9, framealpha=0.9)
    save_png(path, _pixels(fig))
    return path
