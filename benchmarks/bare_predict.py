"""The least work predict.py does: load a snapshot's weights and the stacked test images, forward them.

    python benchmarks/bare_predict.py --snapshot S --data_dir D [--batch_size 64]

Same model and input transform (val_128_resize and back to 101x101, as the benchmark's snapshot
was trained), probabilities kept as float16 in memory. No CSV, no .npy written, no checks, no
progress bar. Prints one JSON line with its own loop time.
"""
import argparse
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
    p.add_argument('--snapshot', required=True)
    p.add_argument('--data_dir', required=True)
    p.add_argument('--batch_size', type=int, default=64)
    args = p.parse_args()

    from net.models import build_model
    snap = torch.load(args.snapshot, map_location='cpu', weights_only=True)
    model = build_model(snap['arch'], pretrained=None)
    model.load_state_dict(snap['model'])
    model.eval()
    images = np.load(Path(args.data_dir) / 'test_images.npy', mmap_mode='r', allow_pickle=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scale, shift = 1.0 / std, -mean / std
    out = np.empty((len(images), 101, 101), np.float16)
    t_loop = time.perf_counter()
    with torch.no_grad():
        for a in range(0, len(images), args.batch_size):
            x01 = torch.from_numpy(np.ascontiguousarray(images[a:a + args.batch_size]))[:, None].float() / 255.0
            x = F.interpolate(x01, size=(128, 128), mode='bilinear', align_corners=False) * scale + shift
            prob = torch.sigmoid(model(x)['mask'])
            out[a:a + len(x)] = F.interpolate(prob, size=(101, 101), mode='bilinear', align_corners=False)[:, 0].numpy()
    now = time.perf_counter()
    print(json.dumps({'loop_s': now - t_loop, 'setup_s': t_loop - T_START, 'images': len(images)}))


if __name__ == '__main__':
    main()
