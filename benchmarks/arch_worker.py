"""One architecture's figures, measured in a fresh process; prints one JSON line.

    python benchmarks/arch_worker.py --arch unet_lite --phase train --steps 6
    python benchmarks/arch_worker.py --arch unet_resnet34_v1 --phase train --vs smp

phase flops:  forward and training FLOPs per image (torch.utils.flop_counter.FlopCounterMode).
phase train:  images/s of a training step (forward, BCE on every output, backward, Adam) on
              pre-made tensors, and the step's peak RSS above the built model.
phase infer:  images/s of a no-grad forward pass, and its peak RSS above the built model.
Between timed steps a big fp32 matmul measures the machine's peak in the same moments, so
'share of peak' is a ratio of two figures taken under the same load.

--vs smp (unet_resnet34_v1): also segmentation_models_pytorch's Unet('resnet34',
encoder_weights=None), timed alternately with ours, same batch and layout.
--layout both: time the model in channels_last and in contiguous layout, alternately.
--threads 1,2: time with each torch thread count, alternately.
"""
import argparse
import json
import time

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import matmul_gflops, median, peak_rss_mb, reset_peak_rss, rss_mb  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arch', required=True)
    p.add_argument('--phase', choices=['flops', 'train', 'infer'], required=True)
    p.add_argument('--batch', type=int, default=None, help="default 16 for train, 64 for infer")
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--steps', type=int, default=5, help="timed steps (batches) per variant")
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--layout', choices=['on', 'off', 'both', 'model'], default='on',
                   help="channels_last on / off / both (alternately) / model (whatever the model does itself)")
    p.add_argument('--vs', choices=['none', 'smp'], default='none')
    p.add_argument('--precision', choices=['fp32', 'bf16', 'both'], default='fp32',
                   help="fp32, bf16 autocast (the pipeline's --amp bf16), or both alternately")
    p.add_argument('--threads', default='', help="comma-separated thread counts to alternate (default: torch's)")
    return p.parse_args(argv)


class SmpWrapper(torch.nn.Module):
    """smp's Unet with our output contract ({'mask': logits})."""
    output_keys = frozenset({'mask'})

    def __init__(self):
        super().__init__()
        import segmentation_models_pytorch as smp
        self.net = smp.Unet('resnet34', encoder_weights=None, in_channels=3, classes=1)

    def forward(self, x):
        return {'mask': self.net(x)}


def build(name):
    if name == 'smp_unet_resnet34':
        return SmpWrapper()
    from net.models import build_model
    return build_model(name, pretrained=None)


def set_layout(model, channels_last):
    """Put the model (and, for our SegNets, the input it enforces) in one memory layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    if hasattr(model, 'channels_last'):
        model.channels_last = channels_last  # SegNet re-lays the input out itself when this is set
    return model


def all_logits(out):
    for key, value in out.items():
        for t in (value if isinstance(value, (list, tuple)) else [value]):
            yield key, t


def loss_of(out, target):
    """BCE on every output: maps against the mask, the image-level 'salt' logit against 'any salt'."""
    total = 0.0
    for key, t in all_logits(out):
        if key == 'salt':
            total = total + F.binary_cross_entropy_with_logits(t, target.flatten(1).amax(1))
        else:
            total = total + F.binary_cross_entropy_with_logits(t, target)
    return total


def make_inputs(n, size, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def count_flops(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    x, y = make_inputs(2, size, False)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    fwd = fc.get_total_flops() / 2
    model.train()
    with FlopCounterMode(display=False) as fc:
        loss_of(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return fwd, fc.get_total_flops() / 2


def main(args=None):
    args = parse_args(args)
    torch.manual_seed(0)
    default_threads = torch.get_num_threads()
    thread_list = [int(t) for t in args.threads.split(',') if t] or [default_threads]
    names = [args.arch] + (['smp_unet_resnet34'] if args.vs == 'smp' else [])
    layouts = {'on': [True], 'off': [False], 'both': [True, False], 'model': [None]}[args.layout]
    result = {'arch': args.arch, 'phase': args.phase, 'size': args.size, 'default_threads': default_threads}

    if args.phase == 'flops':
        model = build(args.arch)
        result['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
        result['fwd_gflop'], result['train_gflop'] = (f / 1e9 for f in count_flops(model, args.size))
        print(json.dumps(result))
        return result

    train = args.phase == 'train'
    batch = args.batch or (16 if train else 64)
    result['batch'] = batch
    import net.models  # noqa: F401  (its imports are not the models' memory)
    rss0 = rss_mb()
    variants = {}
    precisions = ['fp32', 'bf16'] if args.precision == 'both' else [args.precision]
    for name in names:
        for cl in layouts:
            for th in thread_list:
                for prec in precisions:
                    model = build(name)
                    if cl is not None:
                        set_layout(model, cl)
                    model.train(train)
                    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if train else None
                    x, y = make_inputs(batch, args.size, bool(cl))
                    key = name + ('' if cl is None or args.layout != 'both' else (':cl' if cl else ':nchw')) \
                        + (f':t{th}' if len(thread_list) > 1 else '') + (f':{prec}' if len(precisions) > 1 else '')
                    variants[key] = dict(model=model, opt=opt, x=x, y=y, threads=th, bf16=prec == 'bf16', times=[])
    result['build_rss_mb'] = rss_mb() - rss0

    def step(v):
        torch.set_num_threads(v['threads'])
        t0 = time.perf_counter()
        amp = torch.autocast('cpu', dtype=torch.bfloat16, enabled=v['bf16'])
        if train:
            with amp:
                out = v['model'](v['x'])
            loss = loss_of({k: [t.float() for t in o] if isinstance(o, list) else o.float() for k, o in out.items()},
                           v['y'])
            v['opt'].zero_grad(set_to_none=True)
            loss.backward()
            v['opt'].step()
        else:
            with torch.no_grad(), amp:
                v['model'](v['x'])
        return time.perf_counter() - t0

    # Peak memory: the first variant alone, from a reset high-water mark (warm-up included, so
    # the optimizer state and the first allocation of every activation are counted).
    first = next(iter(variants.values()))
    base = rss_mb()
    can_reset = reset_peak_rss()
    for _ in range(max(1, args.warmup)):
        step(first)
    result['peak_rss_delta_mb'] = (peak_rss_mb() - base) if can_reset else None
    for v in list(variants.values())[1:]:
        for _ in range(max(1, args.warmup)):
            step(v)

    peaks = []
    keys = list(variants)
    for r in range(args.steps):
        torch.set_num_threads(default_threads)
        peaks.append(matmul_gflops(2048, reps=2))
        for k in (keys if r % 2 == 0 else keys[::-1]):
            variants[k]['times'].append(step(variants[k]))
    torch.set_num_threads(default_threads)
    peaks.append(matmul_gflops(2048, reps=2))
    result['matmul_peak_gflops'] = median(peaks)
    result['variants'] = {}
    for k, v in variants.items():
        result['variants'][k] = {'images_per_s': batch / median(v['times']), 'step_s': v['times']}
    # Paired ratios (same round) between the first variant and every other.
    ref = variants[keys[0]]['times']
    result['ratios_vs_first'] = {k: median([a / b for a, b in zip(variants[k]['times'], ref)]) for k in keys[1:]}
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
