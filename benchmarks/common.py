"""Timing, memory and reporting helpers shared by the benchmarks.

The machine the benchmarks run on may be shared, so absolute figures drift with the load.
Everything that is compared is therefore measured in the same run, interleaved (A B, B A,
A B, ...), and reported as the median over repeats of the per-round ratio.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BENCH = ROOT / 'benchmarks'


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float('nan')


def spread(xs):
    """'min-max' of a list, for showing how noisy a figure was."""
    xs = [x for x in xs if x is not None]
    return f"{min(xs):.3g}-{max(xs):.3g}" if len(xs) > 1 else ''


def interleaved(funcs, repeats):
    """Run each of `funcs` (name -> callable returning seconds or a dict with 'seconds') `repeats` times.

    Rounds alternate the order (forward, then reversed), so a slow drift of the machine's load
    hits every function alike. Returns name -> list of results, one per round.
    """
    names = list(funcs)
    out = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(funcs[n]())
    return out


def paired_ratio(num, den):
    """Median over rounds of num[i] / den[i] (each a list of seconds)."""
    return median([a / b for a, b in zip(num, den) if a and b])


# ---------------------------------------------------------------- processes and memory

# A tiny launcher forks the command and reports its rusage. Forking it straight from this
# (large) process would not do: Linux carries the parent's peak RSS at fork into the child's
# ru_maxrss across exec, so every child would seem at least as big as the benchmark itself.
LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, u = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], 'w') as f:
    json.dump({'rc': os.waitstatus_to_exitcode(status), 'seconds': seconds, 'maxrss_kb': u.ru_maxrss,
               'cpu_seconds': u.ru_utime + u.ru_stime}, f)
"""


def run_measured(args, env=None, cwd=ROOT, timeout=3600, check=True):
    """Run a command; dict(seconds=wall time, peak_mb=its own peak RSS, cpu_seconds, rc, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    full_env = {k: v for k, v in full_env.items() if v is not None}  # env value None: unset it
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    stem = Path(os.environ.get('TMPDIR', '/tmp')) / f'salt_bench_{os.getpid()}_{time.monotonic_ns()}'
    usage = Path(f'{stem}.json')
    with open(f'{stem}.out', 'w+') as fo, open(f'{stem}.err', 'w+') as fe:
        p = subprocess.Popen([sys.executable, '-c', LAUNCHER, str(usage)] + [str(a) for a in args], cwd=cwd,
                             env=full_env, stdout=fo, stderr=fe)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"timed out after {timeout}s: {' '.join(map(str, args))}") from None
        fo.seek(0)
        fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    try:
        u = json.loads(usage.read_text())
    except (OSError, ValueError):
        u = {'rc': p.returncode or 1, 'seconds': float('nan'), 'maxrss_kb': 0, 'cpu_seconds': float('nan')}
    for suffix in ('.out', '.err', '.json'):
        Path(f'{stem}{suffix}').unlink(missing_ok=True)
    res = dict(seconds=u['seconds'], rc=u['rc'], stdout=stdout, stderr=stderr, peak_mb=u['maxrss_kb'] / 1024,
               cpu_seconds=u['cpu_seconds'])
    if check and res['rc'] != 0:
        raise RuntimeError(f"failed ({res['rc']}): {' '.join(map(str, args))}\n{stderr[-3000:]}")
    return res


def last_json(stdout):
    """The last line of `stdout` that parses as a JSON object (workers print their result there)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith('{'):
            return json.loads(line)
    raise ValueError(f"no JSON result in output:\n{stdout[-2000:]}")


def rss_mb():
    """This process's current resident set (MB)."""
    return _status_kb('VmRSS') / 1024


def peak_rss_mb():
    """This process's peak resident set since start or the last reset_peak_rss() (MB)."""
    return _status_kb('VmHWM') / 1024


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs). False if refused."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _status_kb(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- compute peak

def matmul_gflops(n=2048, reps=3):
    """fp32 GFLOP/s of an n x n x n matmul (best of `reps`), with torch's current thread count."""
    import torch
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best = float('inf')
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------- machine and report

def machine_info():
    import numpy
    import torch
    cpu = 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float('nan')
    return {
        'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
        'nproc': os.cpu_count(),
        'cpu': cpu,
        'torch': torch.__version__,
        'torch_threads': torch.get_num_threads(),
        'numpy': numpy.__version__,
        'python': platform.python_version(),
        'load_at_start': round(load, 2),
        # inherited by every benchmark subprocess; both change CPU timings a lot on a shared machine
        'OMP_WAIT_POLICY': os.environ.get('OMP_WAIT_POLICY', 'unset'),
        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', 'unset'),
    }


def fmt(x, digits=3):
    if x is None:
        return '-'
    if isinstance(x, str):
        return x
    if x != x:  # NaN
        return '-'
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def markdown_table(header, rows):
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    for r in rows:
        lines.append('| ' + ' | '.join(fmt(c) for c in r) + ' |')
    return '\n'.join(lines)


def text_table(header, rows):
    cells = [list(header)] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def log(msg):
    print(msg, file=sys.stderr, flush=True)
