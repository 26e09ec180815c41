"""The least work train.py does, as a plain loop: the baseline the train benchmark divides by.

    python benchmarks/bare_train.py --data_dir D --arch unet_lite --n_epochs 2 --batch_size 16 --limit 256

Same model (net.models), same fold rows and --limit cut, same augmentation (net.augmentations'
train_128_v1 applied image by image), same batch count per epoch (drop_last), same Adam,
validation forward at 128 (val_128_resize) with its loss. No DataLoader, no logs, no
snapshots, no checkpoint, no progress bar. Prints one JSON line with its own loop time.
"""
import argparse
import csv
import json
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data_dir', required=True)
    p.add_argument('--arch', default='unet_lite')
    p.add_argument('--n_epochs', type=int, default=1)
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--val_batch_size', type=int, default=64)
    p.add_argument('--limit', type=int, default=0)
    p.add_argument('--fold', type=int, default=0)
    p.add_argument('--train_augs', default='train_128_v1')
    p.add_argument('--seed', type=int, default=42)
    args = p.parse_args()

    from net.geometry import build_train_aug
    from net.models import build_model

    d = Path(args.data_dir)
    images = np.load(d / 'train_images.npy', allow_pickle=False)
    masks = np.load(d / 'train_masks.npy', allow_pickle=False)
    with open(d / 'train.csv') as f:
        pos = {row['id']: k for k, row in enumerate(csv.DictReader(f))}
    with open(d / 'train_with_folds.csv') as f:
        rows = [(pos[r['id']], int(r['fold'])) for r in csv.DictReader(f)]
    va = np.sort([i for i, fo in rows if fo == args.fold])
    tr = np.sort([i for i, fo in rows if fo != args.fold])
    if args.limit:
        tr, va = tr[:args.limit], va[:max(1, args.limit // 4)]
    tr_images, tr_masks, va_images, va_masks = images[tr], masks[tr], images[va], masks[va]

    torch.manual_seed(args.seed)
    model = build_model(args.arch, pretrained=None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    aug = build_train_aug(args.train_augs, seed=args.seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scale, shift = 1.0 / (255.0 * std), -mean / std
    rng = np.random.default_rng(args.seed)
    bs = args.batch_size
    t_loop = time.perf_counter()
    for epoch in range(args.n_epochs):
        model.train()
        order = rng.permutation(len(tr_images))
        for a in range(0, len(order) - bs + 1, bs):
            xs, ys = [], []
            for i in order[a:a + bs]:
                out = aug(image=tr_images[i], mask=tr_masks[i])
                xs.append(out['image'])
                ys.append(out['mask'])
            x = torch.from_numpy(np.stack(xs))[:, None].float() * scale + shift
            y = torch.from_numpy(np.stack(ys))[:, None].float()
            loss = F.binary_cross_entropy_with_logits(model(x)['mask'], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for a in range(0, len(va_images), args.val_batch_size):
                x01 = torch.from_numpy(va_images[a:a + args.val_batch_size])[:, None].float() / 255.0
                x = F.interpolate(x01, size=(128, 128), mode='bilinear', align_corners=False) * (scale * 255.0) + shift
                logits = model(x)['mask']
                t = torch.from_numpy(va_masks[a:a + args.val_batch_size])[:, None].float()
                t = (F.interpolate(t, size=(128, 128), mode='bilinear', align_corners=False) > 0.5).float()
                F.binary_cross_entropy_with_logits(logits, t)
                F.interpolate(torch.sigmoid(logits), size=(101, 101), mode='bilinear', align_corners=False)
    now = time.perf_counter()
    print(json.dumps({'loop_s': now - t_loop, 'setup_s': t_loop - T_START,
                      'batches_per_epoch': len(tr_images) // bs, 'val_images': len(va_images)}))


if __name__ == '__main__':
    main()
