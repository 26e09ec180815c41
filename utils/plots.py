"""Pictures of a run, drawn with OpenCV alone (matplotlib is not a dependency).

    EXP/logs/learning_curve.png   losses, validation score and learning rate per epoch
    EXP/logs/val_examples.png     the best and worst validation images with true and predicted outlines
    <masks>.thresholds.png        optimize_threshold.py's score against the probability threshold

All are rewritten atomically, so a viewer never shows half a file; train.py refreshes the
first two after the first epoch, then at most every 20 seconds, and after the last epoch.
"""
import math
import time

import cv2

import numpy as np

from utils.io import save_png
from utils.metric import image_scores_from_counts

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GRID, AXIS = (255, 255, 255), (30, 30, 30), (228, 228, 228), (90, 90, 90)
# BGR; the Tableau palette, which stays distinguishable for the common colour-vision deficiencies.
BLUE, ORANGE, GREEN, PURPLE, RED, GRAY = (180, 119, 31), (14, 127, 255), (44, 160, 44), (189, 103, 148), \
    (40, 39, 214), (127, 127, 127)
TRUE_COLOR, PRED_COLOR = (0, 215, 0), (255, 0, 255)  # green vs magenta: tells apart for most viewers


def text(img, s, org, scale=0.45, color=BLACK, thickness=1, anchor='left'):
    """Draw `s` with its baseline at org; anchor 'center' or 'right' aligns on org's x."""
    (w, _), _ = cv2.getTextSize(s, FONT, scale, thickness)
    x = org[0] - (w // 2 if anchor == 'center' else w if anchor == 'right' else 0)
    cv2.putText(img, s, (int(x), int(org[1])), FONT, scale, color, thickness, cv2.LINE_AA)
    return w


def nice_ticks(lo, hi, n=6):
    """Round tick values in [lo, hi] (steps of 1, 2 or 5 times a power of ten), at most n of them,
    as many as possible; returns (ticks, step)."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    mag = 10.0 ** math.floor(math.log10((hi - lo) / n))
    for step in (m * mag * 10 ** e for e in (0, 1, 2) for m in (1, 2, 5)):
        first = math.ceil(lo / step - 1e-9) * step
        count = int((hi - first) / step + 1e-9) + 1
        if count <= n:
            return [first + k * step for k in range(count)], step
    return [lo, hi], hi - lo


def log_ticks(lo, hi):
    """Tick values for a log10 axis spanning [lo, hi] in log units: decades, or 1-2-5 within one."""
    if hi - lo >= 1.5:
        step = max(1, math.ceil((hi - lo) / 5))
        return [10.0 ** e for e in range(math.ceil(lo), math.floor(hi) + 1) if e % step == 0]
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in mantissas
                 if lo <= math.log10(m * 10.0 ** e) <= hi]
        if len(ticks) >= 3:
            return ticks
    return ticks


def tick_label(v, step):
    if step >= 1:
        return f"{v:.0f}"
    decimals = min(6, max(0, -math.floor(math.log10(step) + 1e-9)))
    return f"{v:.{decimals}f}"


class Panel:
    """One plot area: data limits mapped onto a pixel rectangle, with frame, grid, ticks and labels."""

    def __init__(self, img, rect, xlim, ylim, title, xlabel='', log_y=False):
        self.img, self.log_y = img, log_y
        self.x0, self.y0, self.x1, self.y1 = rect
        self.xlim = xlim if xlim[1] > xlim[0] else (xlim[0] - 0.5, xlim[1] + 0.5)
        lo, hi = (math.log10(v) for v in ylim) if log_y else ylim
        if not hi > lo:
            pad = abs(lo) * 0.05 or 0.5
            lo, hi = lo - pad, hi + pad
        self.ylim = (lo, hi)  # in log10 units when log_y
        self.title, self.xlabel = title, xlabel
        self.drawn = []  # pixel positions of the data, so that the legend can avoid them

    def px(self, x, y):
        if self.log_y:
            y = math.log10(max(y, 1e-30))
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return int(round(self.x0 + fx * (self.x1 - self.x0))), int(round(self.y1 - fy * (self.y1 - self.y0)))

    def axes(self, integer_x=False):
        img = self.img
        xt, xs = nice_ticks(*self.xlim, n=7)
        if integer_x and xs < 1:
            xt, xs = [v for v in range(math.ceil(self.xlim[0]), math.floor(self.xlim[1]) + 1)], 1
        if self.log_y:
            yt = log_ticks(*self.ylim)
            ylabels = [f"{v:.0e}".replace('e-0', 'e-') for v in yt]
        else:
            yt, ys = nice_ticks(*self.ylim, n=6)
            ylabels = [tick_label(v, ys) for v in yt]
        y_any = 10 ** self.ylim[0] if self.log_y else self.ylim[0]
        for v in xt:
            x, _ = self.px(v, y_any)
            cv2.line(img, (x, self.y0), (x, self.y1), GRID, 1)
            text(img, tick_label(v, xs), (x, self.y1 + 17), 0.4, AXIS, anchor='center')
        for v, label in zip(yt, ylabels):
            _, y = self.px(self.xlim[0], v)
            cv2.line(img, (self.x0, y), (self.x1, y), GRID, 1)
            text(img, label, (self.x0 - 6, y + 4), 0.4, AXIS, anchor='right')
        cv2.rectangle(img, (self.x0, self.y0), (self.x1, self.y1), AXIS, 1)
        text(img, self.title, ((self.x0 + self.x1) // 2, self.y0 - 10), 0.5, BLACK, anchor='center')
        if self.xlabel:
            text(img, self.xlabel, ((self.x0 + self.x1) // 2, self.y1 + 36), 0.42, AXIS, anchor='center')

    def line(self, xs, ys, color, thickness=2, markers=None):
        pts = [self.px(x, y) for x, y in zip(xs, ys) if y is not None and np.isfinite(y)]
        for a, b in zip(pts, pts[1:] or pts):
            self.drawn += [tuple(p) for p in np.linspace(a, b, 12).astype(int)]
        if len(pts) > 1:
            cv2.polylines(self.img, [np.array(pts, np.int32)], False, color, thickness, cv2.LINE_AA)
        # Markers make a one-epoch curve visible and show the epochs when there are few.
        if markers or (markers is None and len(pts) <= 30):
            for p in pts:
                cv2.circle(self.img, p, 3, color, -1, cv2.LINE_AA)

    def vline(self, x, color=GRAY, dashed=True):
        px, _ = self.px(x, 10 ** self.ylim[0] if self.log_y else self.ylim[0])
        for y in range(self.y0, self.y1, 8 if dashed else self.y1 - self.y0):
            cv2.line(self.img, (px, y), (px, min(y + 4 if dashed else self.y1, self.y1)), color, 1)

    def legend(self, items):
        """items: [(label, color) or (label, color, 'circle')]; a white box in the emptiest corner."""
        w = max(cv2.getTextSize(it[0], FONT, 0.42, 1)[0][0] for it in items) + 36
        h = 18 * len(items) + 8
        boxes = [(self.x1 - w - 8, self.y0 + 8), (self.x0 + 8, self.y0 + 8),
                 (self.x1 - w - 8, self.y1 - h - 8), (self.x0 + 8, self.y1 - h - 8)]
        pts = np.array(self.drawn or [(-1, -1)])
        hidden = [int(((pts[:, 0] >= x - 4) & (pts[:, 0] <= x + w + 4) & (pts[:, 1] >= y - 4)
                       & (pts[:, 1] <= y + h + 4)).sum()) for x, y in boxes]
        x, y = boxes[int(np.argmin(hidden))]
        cv2.rectangle(self.img, (x, y), (x + w, y + h), WHITE, -1)
        cv2.rectangle(self.img, (x, y), (x + w, y + h), GRID, 1)
        for k, (label, color, *shape) in enumerate(items):
            yy = y + 16 + 18 * k
            if shape == ['circle']:
                cv2.circle(self.img, (x + 15, yy - 4), 5, color, 2, cv2.LINE_AA)
            else:
                cv2.line(self.img, (x + 6, yy - 4), (x + 24, yy - 4), color, 2, cv2.LINE_AA)
            text(self.img, label, (x + 30, yy), 0.42, BLACK)


def _finite(values):
    v = np.array([np.nan if x is None else float(x) for x in values], np.float64)
    return v[np.isfinite(v)]


def _limits(*series, lo_clip=None, hi_clip=None):
    v = np.concatenate([_finite(s) for s in series]) if series else np.array([])
    if not len(v):
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.01)
    lo, hi = lo - pad, hi + pad
    if lo_clip is not None:
        lo = max(lo, lo_clip)
    if hi_clip is not None:
        hi = min(hi, hi_clip)
    return lo, hi


def learning_curve(rows, title):
    """BGR image (H, W, 3) uint8 of losses, validation metrics and learning rate against the epoch."""
    W, H, top, bottom = 1260, 400, 70, 58
    img = np.full((H, W, 3), 255, np.uint8)
    epochs = [r['epoch'] for r in rows]
    xlim = (min(epochs), max(max(epochs), min(epochs) + 1))
    col = lambda k: [r.get(k) for r in rows]  # noqa: E731
    text(img, title, (W // 2, 26), 0.6, BLACK, anchor='center')
    lefts, width = (60, 480, 900), 340
    panels = []

    p = Panel(img, (lefts[0], top, lefts[0] + width, H - bottom), xlim,
              _limits(col('train_loss'), col('val_loss')), 'loss', 'epoch')
    p.axes(integer_x=True)
    p.line(epochs, col('train_loss'), BLUE)
    p.line(epochs, col('val_loss'), ORANGE)
    p.legend([('train loss', BLUE), ('val loss', ORANGE)])
    panels.append(p)

    p = Panel(img, (lefts[1], top, lefts[1] + width, H - bottom), xlim,
              _limits(col('val_score'), col('val_iou'), lo_clip=0.0, hi_clip=1.0), 'validation (threshold 0.5)', 'epoch')
    p.axes(integer_x=True)
    p.line(epochs, col('val_iou'), PURPLE)
    p.line(epochs, col('val_score'), GREEN)
    items = [('score', GREEN), ('mean IoU', PURPLE)]
    scores = np.array([np.nan if s is None else float(s) for s in col('val_score')])
    if np.isfinite(scores).any():
        b = int(np.nanargmax(scores))
        cv2.circle(img, p.px(epochs[b], scores[b]), 7, RED, 2, cv2.LINE_AA)
        items.append((f"best {scores[b]:.3f}, epoch {epochs[b]}", RED, 'circle'))
    p.legend(items)
    panels.append(p)

    lrs = _finite(col('lr'))
    lrs = lrs[lrs > 0]
    lo, hi = (float(lrs.min()), float(lrs.max())) if len(lrs) else (1e-4, 1e-3)
    p = Panel(img, (lefts[2], top, lefts[2] + width, H - bottom), xlim, (lo / 1.5, hi * 1.5),
              'learning rate', 'epoch', log_y=True)
    p.axes(integer_x=True)
    p.line(epochs, [v if v and v > 0 else None for v in col('lr')], GRAY)
    panels.append(p)

    # Snapshot ensembling restarts the schedule: mark where each cycle begins.
    cycles = col('cycle')
    for k in range(1, len(rows)):
        if cycles[k] is not None and cycles[k] != cycles[k - 1]:
            for p in panels:
                p.vline(epochs[k] - 0.5)
    return img


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
        seconds); probs: this epoch's validation probabilities (N, 101, 101); final: the run's last
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


def threshold_curve(path, thresholds, scores, best):
    """Write a PNG of the validation score against the probability threshold, marking `best`.

    thresholds, scores: 1-D arrays of the same length; best: the chosen threshold.
    """
    thresholds, scores = np.asarray(thresholds, np.float64), np.asarray(scores, np.float64)
    W, H = 720, 440
    img = np.full((H, W, 3), 255, np.uint8)
    b = int(np.argmin(np.abs(thresholds - best)))
    p = Panel(img, (72, 52, W - 28, H - 62), (0.0, 1.0), _limits(scores, lo_clip=0.0, hi_clip=1.0),
              f"validation score against threshold: best {scores[b]:.4f} at {thresholds[b]:.2f}",
              'probability threshold (salt where p > threshold)')
    p.axes()
    p.line(thresholds, scores, BLUE, markers=len(thresholds) <= 30)
    p.vline(0.5, GRAY)
    p.vline(thresholds[b], RED)
    cv2.circle(img, p.px(thresholds[b], scores[b]), 6, RED, 2, cv2.LINE_AA)
    at_half = float(np.interp(0.5, thresholds, scores))
    p.legend([('score', BLUE), (f"best {thresholds[b]:.2f}: {scores[b]:.4f}", RED, 'circle'),
              (f"at 0.50: {at_half:.4f}", GRAY)])
    save_png(path, img)
    return path
