"""Segmentation losses for TGS salt: pixel losses, their weighted sums, and deep supervision.

Every loss is an ``nn.Module`` with ``forward(outputs, targets) -> scalar float32 tensor``:

* ``outputs`` is the model's dict: ``'mask'`` (N,1,H,W) logits, and optionally ``'aux'``
  (a list of (N,1,H,W) logits at input size), ``'salt'`` (N,) image-level logit and
  ``'border'`` (N,1,H,W) logits.
* ``targets`` holds ``'mask'`` (N,1,H,W) in {0,1} and, for the border model, ``'border'``.

``requires`` (frozenset) names the output keys a loss reads, ``target_keys`` the target keys.
``LOSSES`` maps registry names to zero-argument factories; ``build_loss(name)`` looks one up.
After each call, every loss keeps ``parts``: name -> detached unweighted value (a tensor on the
device) of each of its terms, empty for a single-term loss. train_one_epoch averages them per
epoch for the log and TensorBoard without an extra forward and without waiting for the device.
"""
import contextlib
from typing import Callable, Dict, Mapping, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import lookup


# ----------------------------------------------------------------------------------------
# Functional pieces. All take logits and targets of the same shape, with the batch on dim 0,
# and compute in float32 whatever the input dtype, so bf16/fp16 autocast cannot round the
# sums and cumulative sums below.
# ----------------------------------------------------------------------------------------

def _as_fp32(logits, target):
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} does not match target shape {tuple(target.shape)}")
    return logits.float(), target.float()


def bce_with_logits(logits, target):
    """Mean binary cross-entropy on logits. logits, target: (N, ...) -> scalar."""
    x, y = _as_fp32(logits, target)
    return F.binary_cross_entropy_with_logits(x, y)


def bce_per_image(logits, target):
    """Binary cross-entropy averaged over the pixels of each image. (N, ...) -> (N,)."""
    x, y = _as_fp32(logits, target)
    return F.binary_cross_entropy_with_logits(x, y, reduction='none').flatten(1).mean(1)


def _lovasz_weights(labels_sorted):
    # Gradient of the Lovasz extension of the Jaccard loss (Berman et al. 2018, Alg. 1), for
    # each row of labels sorted by decreasing error. It depends on the labels only, so it is
    # a constant for autograd; the loss gradient flows through the sorted errors.
    positives = labels_sorted.sum(1, keepdim=True)
    intersection = positives - labels_sorted.cumsum(1)
    union = positives + (1.0 - labels_sorted).cumsum(1)  # >= 1 everywhere: no division by 0
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_hinge_per_image(logits, target, symmetric=False):
    """Binary Lovasz hinge of each image. logits, target: (N, ...) -> (N,).

    An image with empty truth scores the hinge of its largest error (the standard definition:
    the Jaccard loss of predicting any salt there is 1). With ``symmetric=True`` it returns
    (hinge(logits, target) + hinge(-logits, 1 - target)) / 2, which also rewards getting the
    background right; both halves share one sort because their hinge errors are identical.
    """
    x, y = _as_fp32(logits, target)
    n = x.shape[0]
    x, y = x.reshape(n, -1), y.reshape(n, -1)
    errors = 1.0 - x * (2.0 * y - 1.0)
    # One batched sort along the pixel axis replaces the per-image loop of the reference code.
    errors_sorted, order = errors.sort(dim=1, descending=True)
    labels_sorted = y.gather(1, order)
    hinge = F.relu(errors_sorted)
    loss = (hinge * _lovasz_weights(labels_sorted)).sum(1)
    if symmetric:
        loss = 0.5 * (loss + (hinge * _lovasz_weights(1.0 - labels_sorted)).sum(1))
    return loss


def lovasz_hinge(logits, target, symmetric=False):
    """Lovasz hinge per image, averaged over images. logits, target: (N, ...) -> scalar."""
    return lovasz_hinge_per_image(logits, target, symmetric).mean()


def focal_with_logits(logits, target, gamma=2.0, alpha=None):
    """Mean binary focal loss on logits. logits, target: (N, ...) -> scalar.

    p_t = exp(-BCE) and the loss is (1 - p_t)^gamma * BCE, weighted by alpha on positives and
    1 - alpha on negatives when alpha is given: smp's FocalLoss(mode='binary') with its
    defaults gamma=2, alpha=None. gamma >= 1 keeps the gradient finite where p_t reaches 1.
    """
    x, y = _as_fp32(logits, target)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction='none')
    # -expm1(-b) is 1 - exp(-b) without the cancellation when b is tiny.
    loss = (-torch.expm1(-bce)).pow(gamma) * bce
    if alpha is not None:
        loss = loss * (alpha * y + (1.0 - alpha) * (1.0 - y))
    return loss.mean()


def _soft_overlap_loss(logits, target, fp_weight, smooth, eps):
    # Tversky-style score over the whole batch (one binary channel), as smp aggregates it:
    # (I + smooth) / (I + w * (FP + FN) + smooth), clamped below by eps. w = 0.5 gives Dice,
    # w = 1 gives Jaccard. A batch without any salt pixel contributes 0, since its overlap
    # score is undefined (again as smp does).
    x, y = _as_fp32(logits, target)
    p = torch.sigmoid(x)
    intersection = (p * y).sum()
    p_sum, y_sum = p.sum(), y.sum()
    fp, fn = p_sum - intersection, y_sum - intersection
    score = (intersection + smooth) / (intersection + fp_weight * (fp + fn) + smooth).clamp_min(eps)
    return (1.0 - score) * (y_sum > 0).float()


def soft_dice_loss(logits, target, smooth=0.0, eps=1e-7):
    """1 - soft Dice of sigmoid(logits) over the whole batch. (N, ...) -> scalar.

    Same value as smp's DiceLoss(mode='binary', from_logits=True, smooth, eps); note that
    smp's ``smooth`` enters as (I + s) / ((|P| + |T|) / 2 + s). 0 when the batch has no salt.
    """
    return _soft_overlap_loss(logits, target, 0.5, smooth, eps)


def soft_jaccard_loss(logits, target, smooth=0.0, eps=1e-7):
    """1 - soft IoU of sigmoid(logits) over the whole batch. (N, ...) -> scalar.

    Same value as smp's JaccardLoss(mode='binary', from_logits=True, smooth, eps).
    0 when the batch has no salt.
    """
    return _soft_overlap_loss(logits, target, 1.0, smooth, eps)


def salt_target(mask):
    """Image-level target "the image has salt". mask: (N, 1, H, W) -> (N,) float in {0, 1}."""
    return (mask.flatten(1).sum(1) > 0).float()


# ----------------------------------------------------------------------------------------
# Loss modules
# ----------------------------------------------------------------------------------------

def _fp32_region(tensor):
    # The functions above already cast to float32; turning autocast off as well keeps any op
    # a future edit adds (a matmul, say) from being silently run in bf16/fp16.
    kind = tensor.device.type
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


class SaltLoss(nn.Module):
    """Base class: ``forward(outputs, targets)`` runs ``compute`` in float32 with autocast off."""

    requires = frozenset({'mask'})
    target_keys = frozenset({'mask'})
    # A probability P: validation empties the masks whose salt probability is below P (net.loop.evaluate).
    salt_gate = None
    # Whether the loss applies a per-image targets['weight'] (N,) (train.py --small_crops).
    takes_weight = False

    def __init__(self):
        super().__init__()
        self.parts = {}

    def forward(self, outputs, targets):
        """outputs, targets: dicts as in the module docstring -> scalar float32 tensor."""
        with _fp32_region(targets['mask']):
            return self.compute(outputs, targets)

    def compute(self, outputs, targets):
        raise NotImplementedError


class PixelLoss(SaltLoss):
    """A per-pixel loss function applied to ``outputs[key]`` against ``targets[key]``.

    fn(logits (N,1,H,W), target (N,1,H,W)) -> scalar; key: 'mask' or 'border'.
    """

    def __init__(self, fn, key='mask', **kwargs):
        super().__init__()
        self.fn, self.key, self.kwargs = fn, key, dict(kwargs)
        self.requires = frozenset({key})
        self.target_keys = frozenset({key})

    def compute(self, outputs, targets):
        return self.fn(outputs[self.key], targets[self.key], **self.kwargs)

    def extra_repr(self):
        args = ''.join(f', {k}={v!r}' for k, v in self.kwargs.items())
        return f'{self.fn.__name__}, key={self.key!r}{args}'


class SaltBCE(SaltLoss):
    """BCE of the image-level ``outputs['salt']`` (N,) against "mask has any salt"."""

    requires = frozenset({'salt'})

    def compute(self, outputs, targets):
        mask = targets['mask']
        return bce_with_logits(outputs['salt'].reshape(mask.shape[0]), salt_target(mask))


class WeightedSum(SaltLoss):
    """sum_k weight_k * loss_k(outputs, targets) over named parts.

    parts: mapping name -> (weight, loss module). ``weights`` keeps the weights by name and,
    after a call, ``parts`` the detached unweighted value of each term.
    """

    def __init__(self, parts: Mapping[str, Tuple[float, nn.Module]]):
        super().__init__()
        if not parts:
            raise ValueError('WeightedSum needs at least one part')
        self.weights = {name: float(w) for name, (w, _) in parts.items()}
        self.terms = nn.ModuleDict({name: loss for name, (_, loss) in parts.items()})
        self.requires = frozenset().union(*(t.requires for t in self.terms.values()))
        self.target_keys = frozenset().union(*(t.target_keys for t in self.terms.values()))

    def compute(self, outputs, targets):
        values = {name: term(outputs, targets) for name, term in self.terms.items()}
        parts = {}
        for name, v in values.items():
            parts[name] = v.detach()
            # A part that is itself a sum of terms also shows its own: bce_lovasz.bce, ...
            parts.update({f'{name}.{sub}': t for sub, t in getattr(self.terms[name], 'parts', {}).items()})
        self.parts = parts
        return sum(self.weights[name] * v for name, v in values.items())

    def extra_repr(self):
        return 'weights=' + repr(self.weights)


# Per-image losses the deep-supervision aux heads can use.
_PER_IMAGE = {'lovasz': lovasz_hinge_per_image, 'bce': bce_per_image}


class DeepSupervisionLoss(SaltLoss):
    """Loss for models returning the final 'mask', per-scale 'aux' logits and a 'salt' logit.

    total = mask_lovasz_weight * lovasz(mask, all images)
          + mask_bce_weight * BCE(mask, all images)
          + salt_weight * BCE(salt, image has salt)
          + aux_weight * sum over aux heads of aux_kind(aux head, images with salt only)

    The aux heads are supervised only on images that contain salt: an empty image has no
    shape to learn at each scale, and deciding "empty" is the salt head's job. A batch with
    no salt image contributes 0 from the aux heads. The weight is per head, so the total aux
    weight grows with the number of heads.

    A per-image ``targets['weight']`` (N,) (the --small_crops samples) multiplies each image's
    terms before the batch mean; the means still divide by the number of (salt) images, so a
    weight of 1 everywhere is the unweighted loss and 0.5 is half an image (``takes_weight``).

    symmetric: the final mask's lovasz is the symmetric one, (L(x, y) + L(-x, 1 - y)) / 2, which
    also scores the background as a class: on an image with little salt, the plain hinge is
    driven by the few salt pixels, the mirrored half by the many background ones.
    salt_only: the final mask's terms too are taken over images with salt only (a masked mean,
    like the aux term's; 0 for a batch without salt), so the mask head never spends capacity on
    "is there salt at all" and an image with a few salt pixels is not pulled towards the empty
    prediction by the ~40 % empty images. Emptiness is then the salt head's decision alone: such a
    model's mask is meaningless on empty images, and it must be used with ``--empty_below P`` at
    predict time (net.inference: masks whose salt probability is below P are emptied), and is
    validated during training the same way at P = 0.5 (net.loop.evaluate, ``salt_gate``).
    """

    requires = frozenset({'mask', 'aux', 'salt'})
    takes_weight = True

    def __init__(self, mask_lovasz_weight=1.0, mask_bce_weight=0.0, salt_weight=0.05,
                 aux_weight=0.1, aux_kind='lovasz', symmetric=False, salt_only=False):
        super().__init__()
        if aux_kind not in _PER_IMAGE:
            raise ValueError(f"aux_kind must be one of {sorted(_PER_IMAGE)}, not {aux_kind!r}")
        self.mask_lovasz_weight = float(mask_lovasz_weight)
        self.mask_bce_weight = float(mask_bce_weight)
        self.salt_weight = float(salt_weight)
        self.aux_weight = float(aux_weight)
        self.aux_kind = aux_kind
        self.symmetric = bool(symmetric)
        self.salt_only = bool(salt_only)
        # what validation empties by the salt head (net.loop.evaluate): its decision is the model's
        self.salt_gate = 0.5 if salt_only else None

    def compute(self, outputs, targets):
        mask, logits = targets['mask'], outputs['mask']
        has_salt = salt_target(mask)
        # A masked mean instead of indexing the salt images keeps shapes static (no host sync).
        n_salt = has_salt.sum().clamp_min(1.0)
        weight = targets.get('weight')
        salt_logit = outputs['salt'].reshape(mask.shape[0])
        values = {}
        if weight is None and not self.salt_only:
            if self.mask_lovasz_weight:
                values['mask_lovasz'] = lovasz_hinge(logits, mask, symmetric=self.symmetric)
            if self.mask_bce_weight:
                values['mask_bce'] = bce_with_logits(logits, mask)
        else:
            # per-image values, weighted, then a (masked) mean over the batch's images
            w = torch.ones_like(has_salt) if weight is None else weight.float().reshape(mask.shape[0])
            sel, count = (has_salt * w, n_salt) if self.salt_only else (w, float(mask.shape[0]))
            if self.mask_lovasz_weight:
                values['mask_lovasz'] = (lovasz_hinge_per_image(logits, mask, self.symmetric) * sel).sum() / count
            if self.mask_bce_weight:
                values['mask_bce'] = (bce_per_image(logits, mask) * sel).sum() / count
        if weight is None:
            values['salt'] = bce_with_logits(salt_logit, has_salt)
        else:
            values['salt'] = (bce_per_image(salt_logit[:, None], has_salt[:, None]) * w).mean()
        aux_sel = has_salt if weight is None else has_salt * w
        per_image = _PER_IMAGE[self.aux_kind]
        aux = logits.new_zeros((), dtype=torch.float32)
        for head in outputs['aux']:
            aux = aux + (per_image(head, mask) * aux_sel).sum() / n_salt
        values['aux'] = aux
        self.parts = {name: v.detach() for name, v in values.items()}
        return (self.mask_lovasz_weight * values.get('mask_lovasz', 0.0)
                + self.mask_bce_weight * values.get('mask_bce', 0.0)
                + self.salt_weight * values['salt']
                + self.aux_weight * values['aux'])

    def extra_repr(self):
        return (f'mask_lovasz_weight={self.mask_lovasz_weight}, mask_bce_weight={self.mask_bce_weight}, '
                f'salt_weight={self.salt_weight}, aux_weight={self.aux_weight}, aux_kind={self.aux_kind!r}, '
                f'symmetric={self.symmetric}, salt_only={self.salt_only}')



class TileWindowLoss(SaltLoss):
    """``inner`` on the fixed window [a:a+side, a:a+side] of every map only (--loss_region center).

    Map outputs and targets (4-D tensors, and the 'aux' list) are cropped; image-level values
    ('salt', a per-image 'weight') pass through, and "has salt" is then that of the window. With a
    padding preset the window is where the tile lies (net.geometry.tile_window), so the pixels of
    the reflect-101 pad, copies of pixels inside, are not counted twice. ``parts`` and ``salt_gate``
    are the inner loss's.
    """

    def __init__(self, inner, offset, side=101):
        super().__init__()
        self.inner, self.offset, self.side = inner, int(offset), int(side)
        self.requires, self.target_keys = inner.requires, inner.target_keys
        self.salt_gate = getattr(inner, 'salt_gate', None)
        self.takes_weight = getattr(inner, 'takes_weight', False)

    def _crop(self, v):
        if isinstance(v, (list, tuple)):
            return [self._crop(t) for t in v]
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            a = self.offset
            if v.shape[-1] < a + self.side or v.shape[-2] < a + self.side:
                raise ValueError(f"a {tuple(v.shape)} map has no window [{a}:{a + self.side}]")
            return v[..., a:a + self.side, a:a + self.side]
        return v

    def forward(self, outputs, targets):
        value = self.inner({k: self._crop(v) for k, v in outputs.items()},
                           {k: self._crop(v) for k, v in targets.items()})
        self.parts = self.inner.parts
        return value

    def extra_repr(self):
        return f'offset={self.offset}, side={self.side}'


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------

def _bce(key='mask'):
    return PixelLoss(bce_with_logits, key)


def _lovasz(key='mask'):
    return PixelLoss(lovasz_hinge, key)


def _lovasz_symmetric():
    return PixelLoss(lovasz_hinge, symmetric=True)


def _focal():
    return PixelLoss(focal_with_logits, gamma=2.0, alpha=None)


def _dice():
    return PixelLoss(soft_dice_loss, smooth=0.0, eps=1e-7)


def _jaccard():
    return PixelLoss(soft_jaccard_loss, smooth=0.0, eps=1e-7)


# Pixel terms that weighted_sum can combine by these names besides the registry names.
PRIMITIVES: Dict[str, Callable[[], nn.Module]] = {
    'bce': _bce,
    'lovasz': _lovasz,
    'lovasz_symmetric': _lovasz_symmetric,
    'focal': _focal,
    'dice': _dice,
    'jaccard': _jaccard,
    'border_bce': lambda: _bce('border'),
    'salt_bce': SaltBCE,
}

# Compound losses weigh their parts 1:1: BCE and the overlap terms are of the same order
# (about 0.1-0.7) over most of training, and the competition recipes used plain sums.
LOSSES: Dict[str, Callable[[], nn.Module]] = {
    'BCE': _bce,
    'lovasz': _lovasz,
    'focal': _focal,
    'bce_lovasz': lambda: WeightedSum({'bce': (1.0, _bce()), 'lovasz': (1.0, _lovasz())}),
    'BCEJaccard': lambda: WeightedSum({'bce': (1.0, _bce()), 'jaccard': (1.0, _jaccard())}),
    'BCEDice': lambda: WeightedSum({'bce': (1.0, _bce()), 'dice': (1.0, _dice())}),
    'boundary_bce': lambda: WeightedSum({'mask': (1.0, _bce()), 'border': (1.0, _bce('border'))}),
    'boundary_lovasz': lambda: WeightedSum({'mask': (1.0, _lovasz()), 'border': (1.0, _bce('border'))}),
    # Deep supervision (U-Net with per-scale heads and an image-level salt head): the final
    # mask carries the metric-aligned lovasz alone; the salt BCE and aux terms are small
    # regularisers (1.0 / 0.05 / 0.1 per head, as in the 1st-place-style setups).
    'combined': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=0.0, salt_weight=0.05, aux_weight=0.1),
    # Hypercolumn: the fused mask is a 1x1 head over the concatenated per-scale features, so
    # (a) BCE is added to lovasz on it for dense per-pixel gradients (lovasz only pushes
    # pixels with positive hinge error) and calibrated probabilities at the 0.5 threshold,
    # and (b) each aux head gets 0.25 instead of 0.1, since those heads read exactly the
    # features that are concatenated into the fused output and shaping them is the point.
    'combined_hyper': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=0.5, salt_weight=0.05, aux_weight=0.25),
    # The same heads trained with BCE throughout: learns from scratch where lovasz stalls at first.
    'combined_bce': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=0.0, mask_bce_weight=1.0, salt_weight=0.05, aux_weight=0.1, aux_kind='bce'),
    # combined_bce with the final mask's symmetric lovasz added 1:1 from the first epoch: the IoU
    # surrogate from the start, with BCE's dense gradients to carry the start from scratch (a stage-1
    # lever of benchmarks/ablation_epochs.py; the recipes keep combined_bce).
    'combined_bce_sym': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=1.0, salt_weight=0.05, aux_weight=0.1, aux_kind='bce',
        symmetric=True),
    # combined, with the final mask's lovasz symmetric (the aux heads keep the plain one: they are
    # trained on salt images only, where the salt class is the one to shape).
    'combined_sym': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=0.0, salt_weight=0.05, aux_weight=0.1, symmetric=True),
    # Segmentation on salt images only, emptiness left to the salt head (predict with --empty_below P).
    # The salt BCE weighs 0.5, not 0.05: it is now the only signal for empty images. Its output
    # layer would learn at any weight under Adam (steps are normalised per parameter), but the
    # features it reads are shared, the encoder's and the salt head's hidden layer, which also
    # feeds the mask head (SaltFusion); at 0.05 those would be shaped by the mask terms alone.
    'combined_bce_salt': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=0.0, mask_bce_weight=1.0, salt_weight=0.5, aux_weight=0.1, aux_kind='bce',
        salt_only=True),
    'combined_salt': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=0.0, salt_weight=0.5, aux_weight=0.1, salt_only=True),
    'combined_sym_salt': lambda: DeepSupervisionLoss(
        mask_lovasz_weight=1.0, mask_bce_weight=0.0, salt_weight=0.5, aux_weight=0.1, symmetric=True,
        salt_only=True),
    'lovasz_symmetric': _lovasz_symmetric,
    'BCE_lovasz_symmetric': lambda: WeightedSum(
        {'bce': (1.0, _bce()), 'lovasz_symmetric': (1.0, _lovasz_symmetric())}),
}


def weighted_sum(spec: Mapping[str, float]) -> Callable[[], nn.Module]:
    """Factory for a weighted sum of named losses, e.g. ``weighted_sum({'bce': 1, 'lovasz': 0.5})``.

    Names come from PRIMITIVES or LOSSES (primitives first); an unknown name raises UserError.
    Register the result under a new name with ``LOSSES['mine'] = weighted_sum(...)``.
    """
    known = {**LOSSES, **PRIMITIVES}
    factories = {name: lookup(known, name, 'loss') for name in spec}
    weights = {name: float(w) for name, w in spec.items()}
    return lambda: WeightedSum({name: (weights[name], factories[name]()) for name in spec})


def build_loss(name):
    """Build the registered loss ``name``; an unknown name raises UserError listing LOSSES."""
    return lookup(LOSSES, name, 'loss')()
