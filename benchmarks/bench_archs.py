"""Per-architecture throughput, FLOPs, share of the matmul peak and memory; layout and thread studies.

Every figure comes from benchmarks/arch_worker.py in a fresh process (so peak-RSS deltas do not
inherit another model's allocations); the worker alternates matmul bursts with the timed steps.
"""
from benchmarks.common import BENCH, PY, last_json, log, median, run_measured

HEAVY_GFLOP = 10.0  # forward GFLOP/image above which an architecture gets fewer timed steps


def worker(arch, phase, env=None, **opts):
    args = [PY, BENCH / 'arch_worker.py', '--arch', arch, '--phase', phase]
    for k, v in opts.items():
        args += [f'--{k}', v]
    return last_json(run_measured(args, env=env, timeout=3600)['stdout'])


def bench_archs(archs, quick, threads=0):
    """One row per architecture, plus the unet_resnet34_v1 / smp Unet ratio rows."""
    rows, smp_rows = [], []
    th = {'threads': threads} if threads else {}
    for arch in archs:
        f = worker(arch, 'flops')
        heavy = f['fwd_gflop'] > HEAVY_GFLOP
        steps = 2 if (quick or heavy) else 5
        vs = 'smp' if arch == 'unet_resnet34_v1' else 'none'
        log(f"arch {arch}: {f['params_m']:.1f}M params, {f['fwd_gflop']:.2f} GFLOP/image forward; "
            f"{steps} timed steps{' (alternating with smp Unet)' if vs == 'smp' else ''}")
        # The pipeline's own CPU layout ('model': lite nets switch to channels_last themselves, the
        # others stay contiguous) for the table; channels_last for both sides of the smp comparison.
        tr = worker(arch, 'train', steps=steps, layout='model', **th)
        inf = worker(arch, 'infer', steps=steps, layout='model', **th)
        row = {'arch': arch, 'params_m': f['params_m'], 'fwd_gflop': f['fwd_gflop'], 'train_gflop': f['train_gflop']}
        for name, res, gflop in (('train', tr, f['train_gflop']), ('infer', inf, f['fwd_gflop'])):
            ips = res['variants'][arch]['images_per_s']
            row[f'{name}_ips'] = ips
            row[f'{name}_gflops'] = ips * gflop
            row[f'{name}_peak_share'] = ips * gflop / res['matmul_peak_gflops']
            row[f'{name}_peak_mb'] = res['peak_rss_delta_mb']
            row[f'{name}_matmul_peak'] = res['matmul_peak_gflops']
        rows.append(row)
        if vs == 'smp':
            for phase in ('train', 'infer'):
                res = worker(arch, phase, steps=max(steps, 3), layout='on', vs='smp', **th)
                ours = res['variants'][arch]['images_per_s']
                theirs = res['variants']['smp_unet_resnet34']['images_per_s']
                smp_rows.append({'phase': phase, 'batch': res['batch'], 'ours_ips': ours, 'smp_ips': theirs,
                                 # time ratio per round: ours / smp (> 1: ours slower)
                                 'time_ratio': res['ratios_vs_first']['smp_unet_resnet34'] ** -1,
                                 'matmul_peak': res['matmul_peak_gflops']})
    return rows, smp_rows


def bench_layout(quick, threads=0, archs=None):
    """channels_last vs contiguous (NCHW), train and inference, alternated in one process."""
    rows = []
    th = {'threads': threads} if threads else {}
    archs = archs or (['unet_lite'] if quick else ['unet_lite', 'unet_resnet34_v1'])
    for arch in archs:
        for phase in ('train', 'infer'):
            res = worker(arch, phase, steps=3 if quick else 6, layout='both', **th)
            cl, nchw = res['variants'][f'{arch}:cl'], res['variants'][f'{arch}:nchw']
            rows.append({'arch': arch, 'phase': phase, 'cl_ips': cl['images_per_s'], 'nchw_ips': nchw['images_per_s'],
                         # per-round time ratio nchw / cl: > 1 means channels_last is faster
                         'cl_speedup': res['ratios_vs_first'][f'{arch}:nchw']})
            log(f"layout {arch} {phase}: channels_last x{rows[-1]['cl_speedup']:.2f}")
    return rows


def bench_threads(quick, archs=('unet_lite', 'unet_resnet34_v1'), rounds=None):
    """torch threads 1 vs the default (alternated in-process), under the default and PASSIVE OpenMP wait policy.

    OMP_WAIT_POLICY is read once when the OpenMP runtime loads, so each policy runs in its own
    process; the processes alternate too.
    """
    import os
    rounds = rounds or (1 if quick else 2)
    default = os.cpu_count()
    threads = f'{default},1' if default and default > 1 else '1'
    policies = {'default': {'OMP_WAIT_POLICY': None}, 'PASSIVE': {'OMP_WAIT_POLICY': 'PASSIVE'}}
    archs = archs[:1] if quick else archs
    collected = {}
    for r in range(rounds):
        for pol in (list(policies) if r % 2 == 0 else list(policies)[::-1]):
            for arch in archs:
                for phase in ('train', 'infer'):
                    res = worker(arch, phase, env=policies[pol], steps=3 if quick else 4, layout='model',
                                 threads=threads)
                    for key, v in res['variants'].items():
                        th = key.rsplit(':t', 1)[1] if ':t' in key else str(default)
                        collected.setdefault((arch, phase, pol, th), []).append(v['images_per_s'])
                    collected.setdefault((arch, phase, pol, 'ratio'), []).append(
                        next(iter(res['ratios_vs_first'].values()), 1.0))
    rows = []
    for arch in archs:
        for phase in ('train', 'infer'):
            for pol in policies:
                ips = {th: median(collected[(arch, phase, pol, th)]) for th in threads.split(',')}
                rows.append({'arch': arch, 'phase': phase, 'omp_wait_policy': pol,
                             **{f't{th}_ips': v for th, v in ips.items()},
                             # per-round time ratio t1 / t_default: > 1 means the default thread count is faster
                             'default_threads_speedup': median(collected[(arch, phase, pol, 'ratio')])})
                log(f"threads {arch} {phase} {pol}: {ips}")
    return rows, default


def bench_precision(quick, threads=0, archs=None):
    """bf16 autocast (--amp bf16) vs fp32 on this CPU, train and inference, alternated in one process."""
    rows = []
    th = {'threads': threads} if threads else {}
    archs = archs or (['unet_plain'] if quick else ['unet_lite', 'unet_plain', 'unet_resnet34_v1'])
    for arch in archs:
        size = 112 if arch.startswith('unet_plain') else 128
        for phase in ('train', 'infer'):
            res = worker(arch, phase, steps=3 if quick else 6, layout='model', precision='both', size=size, **th)
            fp, bf = res['variants'][f'{arch}:fp32'], res['variants'][f'{arch}:bf16']
            rows.append({'arch': arch, 'size': size, 'phase': phase, 'fp32_ips': fp['images_per_s'],
                         'bf16_ips': bf['images_per_s'],
                         # per-round time ratio fp32 / bf16: > 1 means bf16 is faster
                         'bf16_speedup': 1.0 / res['ratios_vs_first'][f'{arch}:bf16']})
            log(f"precision {arch} {phase}: bf16 x{rows[-1]['bf16_speedup']:.2f}")
    return rows
