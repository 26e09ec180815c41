"""Where and how tensors are computed: device, precision, layout, data path and process group.

Every decision that depends on the machine is a plain function of plain inputs (the device name,
how many GPUs are visible, the launcher's environment), so the CPU test suite covers the cases a
GPU machine would meet: one GPU, several, a torchrun rank, a bad name.
"""
import contextlib
import os
import sys
from dataclasses import dataclass, field

import torch

from utils.errors import UserError

# ImageNet statistics: the gray image is repeated into three channels so that encoders
# pretrained on RGB see inputs on the scale they were trained with.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

LOADERS = ('auto', 'device', 'prefetch')


@dataclass
class Runtime:
    """Where and how tensors are computed, resolved once from the command line.

    loader: 'device' keeps the training fold on the device and augments whole batches there;
    'prefetch' augments image by image with albumentations on a background thread (or in
    `workers` processes).
    """
    device: torch.device
    amp_dtype: torch.dtype = None  # None: full precision
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    loader: str = 'prefetch'
    ddp: bool = False  # started by torchrun: a process group is up, even with one process
    scale_shift: tuple = field(default=None, repr=False)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.ddp or self.world_size > 1

    @property
    def cuda(self):
        return self.device.type == 'cuda'

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def normalizer(self):
        if self.scale_shift is None:
            scale = (1.0 / (255.0 * STD)).to(self.device)
            shift = (-MEAN / STD).to(self.device)
            self.scale_shift = (scale, shift)
        return self.scale_shift


def torchrun_env(env=None):
    """(rank, local_rank, world_size) when started by torchrun (or any launcher that sets them), else None."""
    env = os.environ if env is None else env
    if 'RANK' not in env or 'WORLD_SIZE' not in env:
        return None
    try:
        return int(env['RANK']), int(env.get('LOCAL_RANK', env['RANK'])), int(env['WORLD_SIZE'])
    except ValueError:
        raise UserError(f"RANK/LOCAL_RANK/WORLD_SIZE are not whole numbers ({env.get('RANK')!r}, "
                        f"{env.get('LOCAL_RANK')!r}, {env.get('WORLD_SIZE')!r}); start the script with torchrun "
                        f"or unset them") from None


def resolve_device(name, cuda_count, local_rank=None):
    """The torch.device a --device value means, with an index for CUDA.

    name: 'auto', 'cpu', 'cuda' or 'cuda:N'. cuda_count: GPUs visible. local_rank: the process's
    rank on its machine under torchrun (picks its GPU when no index is given), else None.
    CUDA devices always get an index: torch.cuda.set_device refuses a bare 'cuda'.
    """
    name = str(name).strip().lower()
    if name == 'auto':
        name = 'cuda' if cuda_count > 0 else 'cpu'
    if name == 'cpu':
        return torch.device('cpu')
    kind, _, index = name.partition(':')
    if kind != 'cuda' or (index and not index.isdigit()):
        raise UserError(f"unknown device {name!r}; pass --device auto, cpu, cuda or cuda:N")
    if cuda_count == 0:
        raise UserError(f"--device {name} was asked for but no CUDA GPU is visible; pass --device cpu or auto")
    if index:
        k = int(index)
    else:
        k = local_rank if local_rank is not None else 0
    if k >= cuda_count:
        what = f"--device {name}" if index else f"torchrun's local rank {k}"
        raise UserError(f"{what} needs GPU {k}, but only {cuda_count} {'is' if cuda_count == 1 else 'are'} visible "
                        f"(0..{cuda_count - 1}); pass --device cuda:N with N < {cuda_count}, or start fewer processes")
    return torch.device('cuda', k)


def resolve_amp(amp, device_type, cuda_bf16=False):
    """The autocast dtype for --amp (None: full precision). auto = bf16 on CUDA that has it, else fp16; off on CPU."""
    if amp == 'auto':
        if device_type != 'cuda':
            return None
        return torch.bfloat16 if cuda_bf16 else torch.float16
    if amp == 'off':
        return None
    if amp in ('bf16', 'fp16'):
        return torch.bfloat16 if amp == 'bf16' else torch.float16
    raise UserError(f"unknown --amp {amp!r}; pass auto, off, bf16 or fp16")


def resolve_loader(loader, device_type, workers):
    """Which batch path trains: 'device' (fold resident on the device, batched augmentation) or 'prefetch'.

    auto: 'device', on CUDA (per-image work on the host leaves the GPU waiting) and on the CPU alike
    (where it also beat the background thread: benchmarks/bench_loader.py, results.md); worker
    processes (--workers N > 0) need the per-image path.
    """
    if loader not in LOADERS:
        raise UserError(f"unknown --loader {loader!r}; pass one of: {', '.join(LOADERS)}")
    if loader == 'auto':
        if workers > 0:
            return 'prefetch'
        return 'device'
    if loader == 'device' and workers > 0:
        raise UserError("--loader device augments on the device and uses no worker processes; drop --workers or "
                        "pass --loader prefetch")
    return loader


def setup_runtime(device='auto', amp='auto', channels_last='auto', workers=-1, threads=0, loader='auto'):
    """Resolve device options; joins the process group when started by torchrun (one process too)."""
    launch = torchrun_env()
    rank, local_rank, world = launch if launch else (0, None, 1)
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dev = resolve_device(device, cuda_count, local_rank)
    if dev.type == 'cuda':
        torch.cuda.set_device(dev)
        # cuDNN's heuristics pick good kernels for these small fixed shapes; benchmark mode would
        # time every convolution shape on the first epoch (and again for validation's last batch).
        torch.backends.cudnn.benchmark = os.environ.get('SALT_CUDNN_BENCHMARK', '0') == '1'
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if threads > 0:
        torch.set_num_threads(threads)
    elif world > 1 and dev.type == 'cpu':
        # Processes on one machine share its cores; oversubscription slows every rank.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    cuda_bf16 = dev.type == 'cuda' and torch.cuda.is_bf16_supported()
    amp_dtype = resolve_amp(amp, dev.type, cuda_bf16)
    if dev.type == 'cpu' and amp_dtype == torch.bfloat16 and not cpu_has_native_bf16():
        print("warning: --amp bf16 on a CPU without native bfloat16 (AVX-512 BF16 / AMX) is emulated and "
              "slower than fp32; drop --amp or pass --amp off", file=sys.stderr)
    # NHWC is faster on both: tensor cores on CUDA, oneDNN's blocked kernels on CPU (benchmarks/results.md).
    channels_last = channels_last in ('auto', 'on', True)
    if workers < 0:
        workers = 0
    loader = resolve_loader(loader, dev.type, workers)
    if launch and not torch.distributed.is_initialized():
        backend = 'nccl' if dev.type == 'cuda' else 'gloo'
        kwargs = {'device_id': dev} if dev.type == 'cuda' else {}
        torch.distributed.init_process_group(backend=backend, **kwargs)
    return Runtime(dev, amp_dtype, bool(channels_last), rank, world, workers, loader, ddp=launch is not None)


# x86 flags of /proc/cpuinfo whose bfloat16 instructions oneDNN uses (AMX tiles, AVX-512 dot products)
NATIVE_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


def cpu_flags(cpuinfo='/proc/cpuinfo'):
    """The CPU's feature flags from /proc/cpuinfo, or None where that file says nothing (not Linux, not x86)."""
    try:
        with open(cpuinfo, encoding='ascii', errors='replace') as f:
            for line in f:
                if line.startswith('flags'):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_native_bf16(flags=None):
    """Whether this CPU has bfloat16 instructions (AMX or AVX-512 BF16), so that --amp bf16 pays.

    oneDNN itself says bf16 is supported on any AVX-512 CPU, but without these flags it converts
    in software: on an AVX-512 Xeon without them (Ice Lake) a training step of the demo's net took
    1.7x as long in bf16 as in fp32 (benchmarks/results.md). Where the flags cannot be read (not an
    x86 Linux), oneDNN's answer is taken.
    """
    flags = cpu_flags() if flags is None else flags
    if flags is not None:
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def is_out_of_memory(exc):
    """Whether an exception is the device running out of memory (CUDA's error, or the allocator's message)."""
    oom = getattr(torch, 'OutOfMemoryError', None) or getattr(torch.cuda, 'OutOfMemoryError', None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and 'out of memory' in str(exc).lower()


@contextlib.contextmanager
def out_of_memory_is_user_error(batch_size, option='--batch_size'):
    """Turn the device running out of memory into one line that names the batch size to lower.

    Writes are atomic elsewhere, so what is on disk stays as the last finished step left it.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only out-of-memory errors are converted
        if not is_out_of_memory(e):
            raise
        smaller = max(1, batch_size // 2)
        raise UserError(f"the device ran out of memory at {option} {batch_size}; pass a smaller {option} "
                        f"(e.g. {smaller}), or free the GPU of other processes (nvidia-smi)") from None


def peak_memory_gb(device):
    """Peak memory allocated by this process on a CUDA device since start, in GB (None on the CPU)."""
    if device.type != 'cuda':
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def unwrap(model):
    """The plain model inside a DDP or compiled wrapper (whose state_dict keys are the plain ones)."""
    model = getattr(model, 'module', model)
    return getattr(model, '_orig_mod', model)
