"""Running one train.py (or predict) process per fold, on which GPU: the process runner of train_folds.py.

A fold's run is a child process, so a crash in one fold costs only that fold, and its output
is streamed live and kept in the fold's log (EXP_fold{k}/train_folds.log). Which folds and
where they live: utils.folds.
"""
import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from utils.errors import UserError
from utils.folds import parse_folds


def visible_gpus():
    """The CUDA device ids a child may be given (CUDA_VISIBLE_DEVICES entries, or 0..n-1)."""
    import torch
    n = torch.cuda.device_count()
    env = os.environ.get('CUDA_VISIBLE_DEVICES')
    if env is None:
        return [str(k) for k in range(n)]
    ids = []
    for x in (x.strip() for x in env.split(',')):
        if not x or x.startswith('-'):  # CUDA stops at the first invalid entry ('-1' hides every GPU)
            break
        ids.append(x)
    return ids[:n]


def choose_gpus(spec, device):
    """The device ids to run folds on: [] for the CPU (or one GPU used as the child finds it)."""
    if device is not None and device.split(':')[0] == 'cpu':
        if spec not in ('auto', 'none'):
            raise UserError(f"--gpus {spec} and --device {device} contradict each other; drop one")
        return []
    if spec == 'none':
        return []
    ids = visible_gpus()
    if spec == 'auto':
        if device not in (None, 'auto', 'cuda') and len(ids) > 1:
            raise UserError(f"--device {device} names one GPU, but the folds run one per GPU; pass --gpus "
                            f"{device.split(':')[1]} instead")
        return ids if len(ids) > 1 else []
    try:
        wanted = parse_folds(spec)
    except UserError:
        raise UserError(f"--gpus {spec!r} is not a list of GPU numbers; pass e.g. 0,1 or 0-3, auto or none") from None
    bad = [g for g in wanted if g >= len(ids)]
    if bad:
        raise UserError(f"--gpus {spec}: {len(ids)} CUDA GPU(s) visible, so there is no GPU {bad[0]}; "
                        f"pass numbers below {len(ids)}" if ids else
                        f"--gpus {spec}: no CUDA GPU is visible; leave --gpus out to train on the CPU")
    if device not in (None, 'auto', 'cuda'):
        raise UserError(f"--device {device} and --gpus {spec} both choose the GPU; pass only --gpus")
    return [ids[g] for g in wanted]


class Job:
    """One child process: argv, the fold it is for, and where its output is kept."""

    def __init__(self, fold, argv, log, title):
        self.fold, self.argv, self.log, self.title = fold, argv, Path(log), title
        self.code = None
        self.tail = collections.deque(maxlen=20)


def run_jobs(jobs, gpus, slots, prefix_lines, stop_on_user_error=True):
    """Run the jobs, `slots` at a time; slot i gets GPU gpus[i % len(gpus)] when there are GPUs.

    Output is copied to each job's log (appended, raw) and to stdout: as it comes when one job runs
    at a time, else complete lines prefixed '[fold k] '. A job that exits 2 (a bad option, which
    every later job would repeat) stops new jobs from starting. Returns the jobs with .code set.
    """
    pending = collections.deque(jobs)
    lock = threading.Lock()
    stop = threading.Event()
    procs = {}
    cpus = os.cpu_count() or 1

    def worker(slot):
        while not stop.is_set():
            with lock:
                if not pending or stop.is_set():
                    return
                job = pending.popleft()
            env = dict(os.environ, PYTHONUNBUFFERED='1')
            if gpus:
                env['CUDA_VISIBLE_DEVICES'] = gpus[slot % len(gpus)]
            elif slots > 1 and 'OMP_NUM_THREADS' not in os.environ:
                env['OMP_NUM_THREADS'] = str(max(1, cpus // slots))  # CPU folds side by side share the cores
            where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if gpus else ''
            with lock:
                print(f"{f'[fold {job.fold}]' if prefix_lines else f'fold {job.fold}:'} {job.title}{where}; log: {job.log}",
                      flush=True)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, 'ab') as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} fold {job.fold}: {job.title}{where}: "
                          f"{' '.join(job.argv)}\n".encode())
                log.flush()
                with lock:
                    if stop.is_set():  # stopped while this job was being set up: it counts as not started
                        return
                    proc = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
                    procs[job.fold] = proc
                pump(proc, job, log, lock, f'[fold {job.fold}] ' if prefix_lines else None)
                job.code = proc.wait()
            if job.code == 2 and stop_on_user_error:
                stop.set()

    def alive():
        with lock:
            return [p for p in procs.values() if p.poll() is None]

    def on_term(signum, frame):
        raise Terminated()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(max(1, slots))]
    try:
        old_term = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave SIGTERM alone
        old_term = None
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    except (KeyboardInterrupt, Terminated) as e:
        # Ctrl-C in a terminal reaches the children too; give them a moment to stop by themselves, then
        # pass the signal on to those still running (it was sent to this process alone). A run's files
        # are written atomically, so each keeps its last finished epoch for the next --resume.
        stop.set()
        deadline = time.monotonic() + 2
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in alive():
            p.send_signal(signal.SIGINT if isinstance(e, KeyboardInterrupt) else signal.SIGTERM)
        for p in alive():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if isinstance(e, Terminated):
            print(f"{Path(sys.argv[0]).name}: terminated; each fold keeps its last finished epoch: run the same "
                  f"command again to resume", file=sys.stderr)
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return jobs


class Terminated(Exception):
    """SIGTERM arrived while folds were running."""


def pump(proc, job, log, lock, prefix):
    """Copy a child's output to its log and to stdout until it closes; keep its last lines in job.tail."""
    pending = b''
    while True:
        chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, 'read1') else proc.stdout.read(4096)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        pending += chunk
        *lines, pending = pending.split(b'\n')
        for line in lines:
            text = line.rsplit(b'\r', 1)[-1].decode(errors='replace').rstrip()
            if text:
                job.tail.append(text)
            if prefix is not None and text:
                with lock:
                    write_out(f"{prefix}{text}\n".encode())
        if prefix is None:
            with lock:
                write_out(chunk)
    text = pending.rsplit(b'\r', 1)[-1].decode(errors='replace').rstrip()
    if text:
        job.tail.append(text)
        if prefix is not None:
            with lock:
                write_out(f"{prefix}{text}\n".encode())


def write_out(data):
    """Bytes to stdout as they are (tqdm's carriage returns included), flushed."""
    sys.stdout.flush()
    buffer = getattr(sys.stdout, 'buffer', None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        sys.stdout.write(data.decode(errors='replace'))
        sys.stdout.flush()


def failure_of(job):
    """Why a job failed, in a few words: the signal that killed it, its own `prog: error: ...`
    message, or its last line (the exception of a traceback)."""
    if job.code is not None and job.code < 0:
        try:
            return f"killed by {signal.Signals(-job.code).name}"
        except ValueError:
            return f"killed by signal {-job.code}"
    for line in reversed(job.tail):
        m = re.match(r'\S+\.py: error: (.*)', line)
        if m:
            return f"exit {job.code}: {m.group(1)}"
    return f"exit {job.code}: {job.tail[-1] if job.tail else 'no output'}"
