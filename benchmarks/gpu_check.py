"""One command that runs every CUDA path of the pipeline on the real data and prints one table.

    make gpu-check                                   # = python3 benchmarks/gpu_check.py --data_dir ../shared/tgs
    python3 benchmarks/gpu_check.py --data_dir DIR --device cuda [--out DIR]
    python3 benchmarks/gpu_check.py --data_dir DIR --device cpu --quick       # the test suite's run

Each row runs the real script as a user would (train.py in fp32 / bf16 / fp16, NCHW, compiled,
with CUDA graphs, at batch 128, on the old per-image loader; train_border.py; train.py under
torchrun; optimize_threshold.py; predict.py; predict_tta.py; predict_se.py; predict_fold_avg.py)
and checks what it wrote. Training rows report the median epoch time (epochs after the first)
against a bare loop with the same model, batch, precision and layout on tensors already on the
device, the GPU's busy share between the end of the first and of the last epoch (NVML or
nvidia-smi, sampled every 0.1 s), the peak memory train.py reports, and the first epoch's time.
DIR is the competition layout (train.csv, train/, test/); it is stacked into --work (symlinks, so
a read-only DIR is fine) unless it already holds the stacked arrays and folds.
"""
import argparse
import csv
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

if not __package__:  # run as a file: import this checkout's modules, see utils/_repo_root.py
    import _repo_root  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

from utils.snapshots import snapshots_of  # noqa: E402

PY = sys.executable

# The GPU recipe's stage 1 (recipes/gpu.toml) by epochs instead of minutes, from scratch, on fold 0.
RECIPE = ['--recipe', str(ROOT / 'recipes' / 'gpu.toml'), '--stage', 'stage1', '--schedule_by', 'epoch', '--max_minutes', '0',
          '--pretrained', 'none', '--scheduler', 'cosine', '--fold', '0']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data_dir', default=str(ROOT.parent / 'shared' / 'tgs'))
    p.add_argument('--device', default='auto', help="auto, cuda, cuda:N or cpu")
    p.add_argument('--quick', action='store_true', help="tiny sizes (32 training images, 1-2 epochs): checks the paths only")
    p.add_argument('--work', default=None, help="scratch folder (default: a fresh one under /tmp)")
    p.add_argument('--out', default=None, help="folder for gpu_check.json and gpu_check.md (default: the work folder)")
    p.add_argument('--epochs', type=int, default=None, help="epochs of the recipe row (default 10; 2 with --quick)")
    p.add_argument('--loader', default='auto', choices=['auto', 'device', 'prefetch'],
                   help="train.py's --loader for the training rows (auto: device)")
    p.add_argument('--only', default=None, help="comma-separated row names to run (default: all)")
    p.add_argument('--bare', default=None, help=argparse.SUPPRESS)  # internal: the bare loop, as JSON config
    return p.parse_args(argv)


# ---------------------------------------------------------------- the bare loop

def bare_loop(cfg):
    """Median seconds per epoch of the least work an epoch needs, for each setting in cfg['settings'].

    Same model, loss, fused Adam, precision and layout as train.py; inputs are normalized tensors
    already on the device (a pool of 8 batches); validation is the forward pass and loss of the
    val images at val batch 64. No augmentation, logging, snapshots or metrics.
    """
    import torch

    from net.losses import build_loss
    from net.models import build_model
    from net.runtime import setup_runtime
    out = []
    for s in cfg['settings']:
        rt = setup_runtime(cfg['device'], s['amp'], s['channels_last'], 0, 0, 'device')
        torch.manual_seed(0)
        model = build_model(cfg['arch'], pretrained=None).to(rt.device)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **({'fused': True} if rt.cuda else {}))
        loss_fn = build_loss(cfg['loss'])
        scaler = torch.amp.GradScaler(rt.device.type) if rt.amp_dtype == torch.float16 else None
        bs, side = s['batch_size'], cfg['side']
        fmt = torch.channels_last if rt.channels_last else torch.contiguous_format

        def make(n):
            x = torch.randn(n, 3, side, side, device=rt.device).contiguous(memory_format=fmt)
            m = (torch.rand(n, 1, side, side, device=rt.device) > 0.6).float()
            return x, {'mask': m}
        pool = [make(bs) for _ in range(8)]
        vb = min(64, cfg['n_val'])
        val = [make(vb) for _ in range(max(1, cfg['n_val'] // vb))]
        steps = cfg['n_train'] // bs

        def epoch():
            model.train()
            total = torch.zeros((), device=rt.device)
            for i in range(steps):
                x, t = pool[i % len(pool)]
                with rt.autocast():
                    o = model(x)
                loss = loss_fn(o, t)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                total += loss.detach()
            model.eval()
            with torch.no_grad():
                for x, t in val:
                    with rt.autocast():
                        o = model(x)
                    total += loss_fn(o, t)
                    torch.sigmoid(o['mask'].float())
            float(total)  # waits for the device

        times = []
        for k in range(cfg['warmup'] + cfg['timed']):
            t0 = time.perf_counter()
            epoch()
            if k >= cfg['warmup']:
                times.append(time.perf_counter() - t0)
        out.append({**s, 'epoch_seconds': statistics.median(times), 'steps': steps,
                    'train_img_per_s': steps * bs / statistics.median(times)})
    print(json.dumps(out))


# ---------------------------------------------------------------- GPU busy share

class BusySampler:
    """Samples the GPU's utilization every `period` s (NVML, else nvidia-smi) and a log file's mtime."""

    def __init__(self, index, watch=None, period=0.1):
        self.index, self.watch, self.period = index, watch, period
        self.samples = []  # (time, util %, log mtime or None)
        self.read = self._reader()
        self._stop = threading.Event()
        self._thread = None

    def _reader(self):
        try:
            import pynvml
            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
        except Exception:  # noqa: BLE001 - no NVML: try the command-line tool
            pass
        if shutil.which('nvidia-smi'):
            def smi():
                r = subprocess.run(['nvidia-smi', '-i', str(self.index), '--query-gpu=utilization.gpu',
                                    '--format=csv,noheader,nounits'], capture_output=True, text=True, timeout=5)
                return float(r.stdout.strip().splitlines()[0])
            try:
                smi()
                return smi
            except Exception:  # noqa: BLE001
                return None
        return None

    @property
    def available(self):
        return self.read is not None

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            t = time.time()
            try:
                u = self.read()
            except Exception:  # noqa: BLE001
                u = None
            m = None
            if self.watch is not None:
                try:
                    m = os.stat(self.watch).st_mtime
                except OSError:
                    pass
            self.samples.append((t, u, m))
            self._stop.wait(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def busy_share(self):
        """Mean utilization between the first and the last change of the watched log (None if unknown)."""
        stamps = sorted({m for _, _, m in self.samples if m is not None})
        if len(stamps) < 2:
            return None
        lo, hi = stamps[0], stamps[-1]
        inside = [u for t, u, _ in self.samples if u is not None and lo < t <= hi]
        return statistics.mean(inside) if inside else None


# ---------------------------------------------------------------- rows

class Check:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.work = Path(args.work) if args.work else Path(os.environ.get('TMPDIR', '/tmp')) / f'gpu_check_{os.getpid()}'
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out) if args.out else self.work
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows = []
        self.device = args.device
        self.cuda = False
        self.gpu_index = 0
        self.only = set(args.only.split(',')) if args.only else None
        self.info, self.started = None, time.perf_counter()

    def log(self, msg):
        print(msg, file=sys.stderr, flush=True)

    def run(self, name, cmd, env=None, timeout=900, watch=None):
        """Run a command; returns (rc, seconds, stdout + stderr tail, busy share)."""
        full_env = dict(os.environ, PYTHONUNBUFFERED='1', NO_ALBUMENTATIONS_UPDATE='1', **(env or {}))
        self.log(f"[{name}] {' '.join(str(c) for c in cmd)}")
        logf = self.work / f'{name}.out'
        t0 = time.perf_counter()
        with BusySampler(self.gpu_index, watch) if self.cuda else _Null() as sampler, open(logf, 'w') as f:
            try:
                rc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = 124
        seconds = time.perf_counter() - t0
        text = logf.read_text(errors='replace')
        busy = sampler.busy_share() if self.cuda and sampler.available else None
        if rc != 0:
            self.log(f"[{name}] FAILED (exit {rc}):\n" + '\n'.join(text.splitlines()[-15:]))
        return rc, seconds, text, busy

    def wanted(self, name):
        return self.only is None or name in self.only

    def add(self, name, ok, **fields):
        row = {'check': name, 'result': 'pass' if ok is True else ('skip' if ok is None else 'FAIL'), **fields}
        self.rows.append(row)
        if self.info is not None:  # the table so far, in case the run is cut short
            report(self, self.info, time.perf_counter() - self.started, quiet=True)
        self.log(f"[{name}] {row['result']} {json.dumps({k: v for k, v in fields.items() if v is not None})}")
        return row

    # -- data
    def data(self):
        src = Path(self.args.data_dir).resolve()
        if (src / 'train_images.npy').is_file() and (src / 'train_with_folds.csv').is_file():
            return src
        if not (src / 'train.csv').is_file():
            raise SystemExit(f"gpu_check.py: error: no train.csv in {src}; pass --data_dir with the competition data")
        from benchmarks.bench_commands import real_copy
        return real_copy(self.work, src)


def _null_busy():
    return None


class _Null:
    available = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    busy_share = staticmethod(_null_busy)


def read_log(exp):
    with open(Path(exp) / 'logs' / 'log.csv') as f:
        return list(csv.DictReader(f))


def epoch_figures(exp):
    rows = read_log(exp)
    secs = [float(r['seconds']) for r in rows]
    later = secs[1:] or secs
    return {'epochs': len(rows), 'first_epoch_s': secs[0] if secs else None,
            'epoch_s': statistics.median(later) if later else None,
            'best_score': max(float(r['val_score']) for r in rows) if rows else None}


def peak_memory(exp):
    try:
        return json.loads((Path(exp) / 'summary.json').read_text()).get('peak_gpu_memory_gb')
    except (OSError, ValueError):
        return None


def main(argv=None):
    args = parse_args(argv)
    if args.bare:
        return bare_loop(json.loads(args.bare))
    import torch

    from net.runtime import resolve_device
    c = Check(args)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dev = resolve_device(args.device, count)
    c.device, c.cuda, c.gpu_index = str(dev), dev.type == 'cuda', dev.index or 0
    quick = args.quick
    started = time.perf_counter()
    data = c.data()
    n_rows = sum(1 for _ in open(data / 'train.csv')) - 1
    limit = 32 if quick else 0
    n_train = limit or n_rows - n_rows // 5
    n_val = max(1, limit // 4) if limit else n_rows // 5
    recipe_epochs = args.epochs or (2 if quick else 10)
    short = 0 if quick else 3  # the variant rows run short + 1 epochs
    batch = 8 if quick else 32
    big = 16 if quick else 128
    common = RECIPE + ['--data_dir', data, '--device', c.device, '--batch_size', str(batch), '--loader', args.loader]
    if limit:
        common += ['--limit', str(limit)]
    exps = c.work / 'exp'
    if c.only is None or any(n.startswith('train') or n in ('torchrun', 'cycles') for n in c.only):
        shutil.rmtree(exps, ignore_errors=True)  # a fresh run (--only with prediction rows reuses the last one's)
    info = {'device': torch.cuda.get_device_name(dev) if c.cuda else 'cpu', 'torch': torch.__version__,
            'date': time.strftime('%Y-%m-%d %H:%M'), 'quick': quick, 'n_train': n_train, 'n_val': n_val}
    c.log(f"gpu_check: {info}")
    c.info = info

    # The bare loop for every (precision, layout, batch) a training row uses, in one process.
    amp_default = 'auto' if c.cuda else 'off'
    settings = {
        'bf16': {'amp': amp_default, 'channels_last': 'on', 'batch_size': batch},
        'fp32': {'amp': 'off', 'channels_last': 'on', 'batch_size': batch},
        'fp16': {'amp': 'fp16', 'channels_last': 'on', 'batch_size': batch},
        'nchw': {'amp': amp_default, 'channels_last': 'off', 'batch_size': batch},
        'big': {'amp': amp_default, 'channels_last': 'on', 'batch_size': big},
    }
    bare = {}
    if any(c.wanted(n) for n in ('train', 'train_prefetch', 'train_fp32', 'train_fp16', 'train_nchw', 'train_batch_big',
                                 'train_compile', 'train_cudagraphs')):
        cfg = {'device': c.device, 'arch': 'unet_plain_ds', 'loss': 'combined_bce', 'side': 112, 'n_train': n_train,
               'n_val': n_val, 'warmup': 1 if quick else 2, 'timed': 1 if quick else 4,
               'settings': [v for k, v in settings.items() if c.cuda or not quick or k != 'fp16']}
        rc, _, text, _ = c.run('bare', [PY, __file__, '--bare', json.dumps(cfg)])
        if rc == 0:
            figures = json.loads(text.strip().splitlines()[-1])
            bare = {k: f['epoch_seconds'] for k, f in zip([k for k in settings if c.cuda or not quick or k != 'fp16'],
                                                              figures)}
        c.add('bare loop', rc == 0, note=', '.join(f"{k} {v:.3g}s" for k, v in bare.items()))

    def train_row(name, label, extra, epochs, setting, script='train.py', launcher=None):
        if not c.wanted(name):
            return None
        exp = exps / name
        cmd = (launcher or [PY]) + [script] + common + extra + ['--n_epochs', str(epochs), '--experiment_dir', exp]
        rc, seconds, text, busy = c.run(name, cmd, watch=exp / 'logs' / 'log.csv')
        ok = rc == 0 and (exp / 'logs' / 'log.csv').is_file()
        fig = epoch_figures(exp) if ok else {}
        ok = ok and fig['epochs'] == epochs and bool(snapshots_of(exp))
        b = bare.get(setting)
        ratio = fig.get('epoch_s') / b if ok and b else None
        return c.add(label, ok, epoch_s=fig.get('epoch_s'), bare_s=b, ratio=ratio,
                     busy_pct=busy, peak_gb=peak_memory(exp), first_epoch_s=fig.get('first_epoch_s'),
                     score=fig.get('best_score'), wall_s=seconds, exp=str(exp))

    bf16 = '--amp', amp_default
    loader = args.loader if args.loader != 'auto' else 'device'
    train_row('train', f"train.py recipe ({'bf16' if c.cuda else 'fp32'}, channels_last, {loader} loader, b{batch})",
              [*bf16], recipe_epochs, 'bf16')
    train_row('train_prefetch', f"train.py --loader prefetch (per-image albumentations thread, b{batch})",
              [*bf16, '--loader', 'prefetch'], short + 1, 'bf16')
    train_row('train_fp32', "train.py --amp off (fp32)", ['--amp', 'off'], short + 1, 'fp32')
    if c.cuda or not quick:
        train_row('train_fp16', "train.py --amp fp16 (grad scaler)", ['--amp', 'fp16'], short + 1, 'fp16')
    elif c.wanted('train_fp16'):
        c.add("train.py --amp fp16 (grad scaler)", None, note="skipped on the CPU with --quick (fp16 is emulated there)")
    train_row('train_nchw', "train.py --channels_last off", [*bf16, '--channels_last', 'off'], short + 1, 'nchw')
    train_row('train_batch_big', f"train.py --batch_size {big} --lr 2e-3", [*bf16, '--batch_size', str(big), '--lr', '2e-3'],
              short + 1, 'big')
    for name, mode in (('train_compile', 'default'), ('train_cudagraphs', 'reduce-overhead')):
        label = f"train.py --compile {mode}"
        if not c.wanted(name):
            continue
        if not c.cuda and quick:
            c.add(label, None, note="skipped on the CPU with --quick (inductor's C++ build takes minutes)")
            continue
        train_row(name, label, [*bf16, '--compile', mode], short + 3, 'bf16')
    if c.wanted('train_border'):
        exp = exps / 'border'
        cmd = [PY, 'train_border.py', '--arch', 'unet_lite_border', '--loss', 'boundary_bce', '--train_augs', 'train_128_v1',
               '--val_augs', 'val_128_resize', '--val_transforms', 'resize_from_any', '--pretrained', 'none',
               '--data_dir', data, '--device', c.device, '--batch_size', str(batch), '--n_epochs', '2',
               '--experiment_dir', exp, '--loader', args.loader] + (['--limit', str(limit)] if limit else [])
        rc, seconds, text, _ = c.run('train_border', cmd)
        ok = rc == 0 and (exp / 'summary.json').is_file()
        fig = epoch_figures(exp) if ok else {}
        c.add("train_border.py (unet_lite_border, mask + border)", ok, epoch_s=fig.get('epoch_s'),
              peak_gb=peak_memory(exp), first_epoch_s=fig.get('first_epoch_s'), wall_s=seconds)
    train_row('torchrun', f"torchrun --nproc_per_node=1 train.py ({'nccl' if c.cuda else 'gloo'})", [*bf16], 2, 'bf16',
              launcher=[PY, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1'])
    if c.wanted('cycles'):
        exp = exps / 'cycles'
        cmd = [PY, 'train.py'] + common + [*bf16, '--cycles', '2', '--n_epochs', '2', '--experiment_dir', exp]
        rc, seconds, _, _ = c.run('cycles', cmd)
        c.add("train.py --cycles 2 (for predict_se.py)", rc == 0 and (exp / 'snapshots' / 'cycle_1').is_dir(), wall_s=seconds)

    recipe = exps / 'train'
    n_test = sum(1 for _ in open(data / 'sample_submission.csv')) - 1

    def csv_ok(path):
        try:
            with open(path) as f:
                return sum(1 for _ in f) - 1 == n_test
        except OSError:
            return False

    if recipe.is_dir() and (recipe / 'summary.json').is_file():
        if c.wanted('optimize_threshold'):
            rc, seconds, _, _ = c.run('optimize_threshold', [PY, 'optimize_threshold.py', '--masks_fn', recipe])
            c.add("optimize_threshold.py", rc == 0 and bool(glob.glob(str(recipe / 'snapshots' / '*.best.json'))),
                  wall_s=seconds)
        preds = []
        for name, script, extra in (('predict', 'predict.py', []), ('predict_tta', 'predict_tta.py', ['--tta', 'null_hflip'])):
            if not c.wanted(name):
                continue
            out = c.work / f'{name}.csv'
            rc, seconds, text, busy = c.run(name, [PY, script, '--snapshot', recipe, '--device', c.device, '--th', 'auto',
                                                   '--out', out, '--batch_size', '256' if c.cuda else '64', *extra])
            ok = rc == 0 and csv_ok(out)
            preds.append(out.with_suffix('.npy'))
            c.add(f"{script} ({n_test} test images)", ok, wall_s=seconds, note=f"{n_test / seconds:.0f} img/s incl. start-up")
        if c.wanted('predict_fold_avg') and len(preds) == 2:
            out = c.work / 'fold_avg.csv'
            rc, seconds, _, _ = c.run('predict_fold_avg', [PY, 'predict_fold_avg.py', *preds, '--th', '0.5',
                                                           '--data_dir', data, '--out', out])
            c.add("predict_fold_avg.py (2 mask files)", rc == 0 and csv_ok(out), wall_s=seconds)
    cyc = exps / 'cycles'
    if c.wanted('predict_se') and (cyc / 'snapshots' / 'cycle_1').is_dir():
        out = c.work / 'se.csv'
        rc, seconds, _, _ = c.run('predict_se', [PY, 'predict_se.py', '--snapshot_dir', cyc, '--device', c.device,
                                                 '--out', out])
        c.add("predict_se.py (2 cycles, hflip TTA)", rc == 0 and csv_ok(out), wall_s=seconds)

    total = time.perf_counter() - started
    report(c, info, total)
    return 0 if all(r['result'] != 'FAIL' for r in c.rows) else 1


def fmt(x, digits=3):
    if x is None:
        return '-'
    if isinstance(x, str):
        return x
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def report(c, info, total, quiet=False):
    header = ['check', 'result', 'epoch s', 'bare s', 'x bare', 'GPU busy %', 'peak GB', '1st epoch s', 'best val',
              'wall s', 'note']
    keys = ['check', 'result', 'epoch_s', 'bare_s', 'ratio', 'busy_pct', 'peak_gb', 'first_epoch_s', 'score', 'wall_s',
            'note']
    table = [[fmt(r.get(k)) for k in keys] for r in c.rows]
    md = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    md += ['| ' + ' | '.join(row) + ' |' for row in table]
    title = (f"gpu_check {info['date']}: {info['device']}, torch {info['torch']}, {info['n_train']} train / "
             f"{info['n_val']} val images{' (--quick)' if info['quick'] else ''}; {total / 60:.1f} min in all")
    (c.out / 'gpu_check.md').write_text(title + '\n\n' + '\n'.join(md) + '\n')
    (c.out / 'gpu_check.json').write_text(json.dumps({'info': info, 'rows': c.rows, 'minutes': total / 60}, indent=1,
                                                     default=str))
    if quiet:
        return
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    print(title)
    print('  '.join(h.ljust(w) for h, w in zip(header, widths)))
    for row in table:
        print('  '.join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == '__main__':
    sys.exit(main())
