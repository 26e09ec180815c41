"""Run the benchmarks, print a compact table and write it as markdown (benchmarks/latest.md; the dated
history of measurements, benchmarks/results.md, is kept by hand and never overwritten).

    python benchmarks/run_all.py                      # everything (long: the WiderResNets, 18000 images)
    python benchmarks/run_all.py --quick              # a few minutes: two archs, smaller inputs, 1 round
    python benchmarks/run_all.py --parts train,predict --repeats 5
    python benchmarks/run_all.py --parts archs --archs unet_lite,unet_resnet34_v1

Parts: archs (per-architecture throughput, FLOPs, share of matmul peak, memory, and the
unet_resnet34_v1 / smp Unet ratio), layout (channels_last on/off; unet_lite and
unet_resnet34_v1 unless --archs names others), precision (bf16 autocast vs fp32 on this CPU;
unet_lite, unet_plain, unet_resnet34_v1), threads (1 vs all cores, default vs PASSIVE
OpenMP waiting), train, predict (predict.py and predict_tta.py), stack, fold_avg,
threshold, memory (predict.py over 18000 images).

Environment variables are passed on to every subprocess: OMP_WAIT_POLICY=PASSIVE keeps the
figures steady on a machine shared with other work (see the threads part).

Every comparison is measured in the same run, alternating the two sides, and reported as the
median of per-round time ratios, so a machine shared with other work still gives usable
ratios (absolute images/s drift with the load). Nothing here asserts a timing.
"""
import argparse
import json
import os
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

from benchmarks.common import BENCH, ROOT, fmt, log, machine_info, markdown_table, matmul_gflops, median, text_table  # noqa: E402

PARTS = ['archs', 'layout', 'precision', 'threads', 'train', 'predict', 'stack', 'fold_avg', 'threshold', 'memory']
QUICK_ARCHS = ['unet_lite', 'unet_resnet34_v1']


def parse_args(argv=None):
    from net.models import ARCHITECTURES
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--quick', action='store_true', help="short version: fewer steps, rounds and images, two archs")
    p.add_argument('--parts', default=','.join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument('--archs', default=None,
                   help=f"comma-separated architectures for the archs and layout parts, or 'all' (default: all; "
                        f"with --quick {','.join(QUICK_ARCHS)}; layout: {','.join(QUICK_ARCHS)}). "
                        f"Known: {','.join(sorted(ARCHITECTURES))}")
    p.add_argument('--repeats', type=int, default=None, help="rounds per command comparison (default 3, --quick 1)")
    p.add_argument('--threads', type=int, default=0,
                   help="torch threads for every part but 'threads' (0: torch's default). On a machine shared "
                        "with other work, OMP_WAIT_POLICY=PASSIVE in the environment steadies the figures a lot "
                        "(see the threads part)")
    p.add_argument('--data_dir', default=os.environ.get('SALT_REAL_DATA', str(ROOT.parent / 'shared' / 'tgs')),
                   help="the real (unzipped) competition data; only read")
    p.add_argument('--work', default='/tmp/salt_bench', help="scratch folder for stacked copies and synthetic inputs")
    p.add_argument('--out', default=str(BENCH / 'latest.md'),
                   help="markdown report (a .json of raw figures beside it); default benchmarks/latest.md")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(',') if x.strip()]
    bad = [x for x in args.parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; choose from {PARTS}")
    args.layout_archs = None  # the layout part studies unet_lite and unet_resnet34_v1 unless --archs names others
    if args.archs not in (None, 'all'):
        args.layout_archs = [a.strip() for a in args.archs.split(',') if a.strip()]
    if args.archs in (None, 'all'):
        args.archs = QUICK_ARCHS if (args.quick and args.archs is None) else list(ARCHITECTURES)
    else:
        args.archs = [a.strip() for a in args.archs.split(',') if a.strip()]
        bad = [a for a in args.archs if a not in ARCHITECTURES]
        if bad:
            p.error(f"unknown architecture(s) {bad}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def main(argv=None):
    args = parse_args(argv)
    from benchmarks import bench_archs as BA
    from benchmarks import bench_commands as BC

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    real = Path(args.data_dir).resolve()  # symlinks under --work point here
    info = machine_info()
    info['matmul_peak_gflops_at_start'] = matmul_gflops(2048, reps=5)
    info['quick'] = args.quick
    info['threads_option'] = args.threads or 'default'
    log(f"machine: {info}")
    results = {'machine': info, 'parts': args.parts}
    t0 = time.perf_counter()
    needs_data = {'train', 'predict', 'fold_avg', 'threshold', 'memory'} & set(args.parts)
    data = BC.real_copy(work, real) if needs_data else None
    commands = []
    for part in args.parts:
        t = time.perf_counter()
        if part == 'archs':
            results['archs'], results['smp'] = BA.bench_archs(args.archs, args.quick, args.threads)
        elif part == 'layout':
            results['layout'] = BA.bench_layout(args.quick, args.threads, *([args.layout_archs] if args.layout_archs else []))
        elif part == 'precision':
            results['precision'] = BA.bench_precision(args.quick, args.threads)
        elif part == 'threads':
            results['threads'], results['default_threads'] = BA.bench_threads(args.quick)
        elif part == 'train':
            commands += BC.bench_train(work, data, args.quick, args.repeats, args.threads)
        elif part == 'predict':
            commands += BC.bench_predict(work, data, args.quick, args.repeats, args.threads)
        elif part == 'stack':
            commands += BC.bench_stack(work, real, args.quick, args.repeats, args.threads)
        elif part == 'fold_avg':
            commands += BC.bench_fold_avg(work, data, args.quick, args.repeats)
        elif part == 'threshold':
            commands += BC.bench_threshold(work, data, args.quick, args.repeats)
        elif part == 'memory':
            commands += BC.bench_memory(work, data, args.quick, args.threads)
        log(f"[{part} done in {time.perf_counter() - t:.0f}s]")
    results['commands'] = commands
    info['matmul_peak_gflops_at_end'] = matmul_gflops(2048, reps=5)
    info['total_minutes'] = round((time.perf_counter() - t0) / 60, 1)
    text, md = render(results)
    print(text)
    out = Path(args.out)
    out.write_text(md)
    out.with_suffix('.json').write_text(json.dumps(results, indent=1, default=str) + '\n')
    print(f"\nwrote {out} and {out.with_suffix('.json')}")
    return results


def render(results):
    """(plain text for the console, markdown for results.md)."""
    info = results['machine']
    head = (f"{info['date']} | {info['nproc']} CPU ({info['cpu']}) | torch {info['torch']} "
            f"({info['torch_threads']} threads) | python {info['python']} | fp32 | load average at start "
            f"{info['load_at_start']} | matmul peak (2048^3 fp32) {info['matmul_peak_gflops_at_start']:.0f} GFLOP/s "
            f"at start, {info.get('matmul_peak_gflops_at_end', float('nan')):.0f} at end"
            f"{' | --quick' if info['quick'] else ''} | torch threads: {info['threads_option']} | "
            f"OMP_WAIT_POLICY {info['OMP_WAIT_POLICY']}")
    sections = []  # (title, header, rows, footnote)
    if results.get('archs'):
        header = ['arch', 'params M', 'fwd GFLOP/img', 'train img/s', 'train GFLOP/s', 'train % peak',
                  'infer img/s', 'infer GFLOP/s', 'infer % peak', 'train peak MB', 'infer peak MB']
        rows = [[r['arch'], r['params_m'], r['fwd_gflop'], r['train_ips'], r['train_gflops'],
                 100 * r['train_peak_share'], r['infer_ips'], r['infer_gflops'], 100 * r['infer_peak_share'],
                 r['train_peak_mb'], r['infer_peak_mb']] for r in results['archs']]
        sections.append(('Architectures at 128x128 (train: batch 16, Adam, BCE on every output; inference: '
                         'batch 64, no grad; the pipeline\'s CPU layout)', header, rows,
                         'FLOPs from torch.utils.flop_counter (a training step counts forward + backward, '
                         '~3x forward). "% peak": achieved GFLOP/s over a 2048^3 fp32 matmul timed between '
                         'the same steps. Peak MB: rise of peak RSS above the built model during the first '
                         'steps (optimizer state and activations).'))
    if results.get('smp'):
        header = ['phase', 'batch', 'unet_resnet34_v1 img/s', 'smp Unet(resnet34) img/s', 'time ratio ours/smp']
        rows = [[r['phase'], r['batch'], r['ours_ips'], r['smp_ips'], r['time_ratio']] for r in results['smp']]
        sections.append(('unet_resnet34_v1 against segmentation_models_pytorch Unet(\'resnet34\', '
                         'encoder_weights=None), both channels_last, alternated', header, rows,
                         'Time ratio: median over rounds of our step time / smp\'s (< 1: ours is faster).'))
    if results.get('layout'):
        header = ['arch', 'phase', 'channels_last img/s', 'NCHW img/s', 'channels_last speed-up']
        rows = [[r['arch'], r['phase'], r['cl_ips'], r['nchw_ips'], r['cl_speedup']] for r in results['layout']]
        sections.append(('channels_last vs contiguous (NCHW) on this CPU', header, rows,
                         'Speed-up: median per-round time ratio NCHW / channels_last (> 1: channels_last faster).'))
    if results.get('precision'):
        header = ['arch', 'input', 'phase', 'fp32 img/s', 'bf16 autocast img/s', 'bf16 speed-up']
        rows = [[r['arch'], r['size'], r['phase'], r['fp32_ips'], r['bf16_ips'], r['bf16_speedup']]
                for r in results['precision']]
        sections.append(('bf16 autocast (--amp bf16) vs fp32 on this CPU', header, rows,
                         'Speed-up: median per-round time ratio fp32 / bf16 (> 1: bf16 faster). CPUs with AMX '
                         '(Xeon Sapphire Rapids and later) run bf16 convolutions natively; elsewhere bf16 is '
                         'emulated and slower, and the scripts warn.'))
    if results.get('threads'):
        d = results['default_threads']
        header = ['arch', 'phase', 'OMP_WAIT_POLICY', f'{d} threads img/s', '1 thread img/s', f'{d} vs 1 thread speed-up']
        rows = [[r['arch'], r['phase'], r['omp_wait_policy'], r.get(f't{d}_ips'), r.get('t1_ips'),
                 r['default_threads_speedup']] for r in results['threads']]
        sections.append((f'Threads: torch default ({d}) vs 1, under the default and PASSIVE OpenMP wait policy',
                         header, rows, 'Speed-up: median per-round time ratio 1 thread / default (> 1: the '
                                       'default thread count is faster). Absolute img/s depend on the load '
                                       'of the machine at the time.'))
    if results.get('commands'):
        header = ['command', 'command s', 'least work s', 'time ratio', 'ratio range', 'CPU-time ratio',
                  'peak RSS MB', 'target', 'holds', 'what']
        rows = []
        for r in results['commands']:
            target = r.get('target_text') or (f"<= {r['target']}x" if r.get('target') is not None else '')
            holds = '' if 'holds' not in r else ('yes' if r['holds'] else 'NO')
            rows.append([r['name'], r['cmd_s'], r['bare_s'], r['ratio'], r['ratio_spread'], r['cpu_ratio'],
                         r['cmd_peak_mb'], target, holds, r['note']])
        sections.append(('Whole commands against the least work they need (subprocesses, start-up included '
                         'on both sides, alternated)', header, rows,
                         'Time ratio: median over rounds of command wall time / least-work wall time. The least '
                         'work is benchmarks/bare_*.py: the same model, images and augmentation in a plain loop, '
                         'without logs, checkpoints, CSV or checks. CPU-time ratio: the same for user+system '
                         'CPU seconds of the process.'))
    text = [head, '']
    md = ['# Benchmark results', '', f'Machine and run: {head}', '',
          'Made by `python benchmarks/run_all.py` (see `--help`); figures from one run, comparisons '
          'alternated within it.', '']
    for title, header, rows, foot in sections:
        if header[-1] == 'what':  # the long notes go under the console table, not in a column
            text += [title, text_table(header[:-1], [r[:-1] for r in rows])] + [f"  {r[0]}: {r[-1]}" for r in rows]
        else:
            text += [title, text_table(header, rows)]
        text.append('')
        md += [f'## {title}', '', markdown_table(header, rows), '', foot, '']
    return '\n'.join(text), '\n'.join(md)


if __name__ == '__main__':
    main()
