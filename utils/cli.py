"""Argument parsing shared by the scripts: parent parsers for options several scripts take."""
import argparse
from dataclasses import dataclass

from utils.config import add_options, option


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (problem and fix), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def actions(self):
        """{name: action} of every long option, by its name without the dashes (--train_augs: train_augs),
        for checking a file of options, e.g. a recipe, against the parser."""
        return {o[2:]: a for a in self._actions for o in a.option_strings if o.startswith('--')}

    def parse_known_args(self, args=None, namespace=None):
        # A script's own parser (the one with --help) starts a command: the inputs that an earlier command of
        # this process read may be its outputs now (utils.io.check_output). Parent and helper parsers do not.
        if self.add_help:
            from utils.io import new_command
            new_command()
        return super().parse_known_args(args, namespace)


# Ranges of the numeric options that several scripts share: (lowest, highest), None for no bound.
SEED_RANGE = (0, 2 ** 32 - 1)  # what numpy's and torch's generators take


def check_ranges(p, args, ranges):
    """p.error (one line) for a numeric option outside its range, NaN or infinite; every numeric option of a
    script is listed in `ranges` ({dest: (lo, hi)}), so that no value starts work it cannot do."""
    import math
    for name, (lo, hi) in ranges.items():
        v = getattr(args, name, None)
        if v is None or isinstance(v, (str, bool)):
            continue
        flag = '--' + name
        if isinstance(v, float) and not math.isfinite(v):
            p.error(f"{flag} must be a finite number; got {v}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            if hi is None:
                p.error(f"{flag} must be at least {lo}; got {v}")
            p.error(f"{flag} must be between {lo} and {hi}; got {v}")


def given_options(p, argv):
    """The dests of the options that appear on the command line `argv` (abbreviations included)."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    longs = {o: a.dest for a in p._actions for o in a.option_strings}
    out = set()
    for token in argv:
        token = str(token)
        if not token.startswith('-') or token == '--':
            continue
        name = token.split('=', 1)[0]
        if name in longs:
            out.add(longs[name])
        else:
            hits = {d for o, d in longs.items() if o.startswith(name) and o.startswith('--')}
            if len(hits) == 1:
                out |= hits
    return out


def check_with(parse, argv, what, script=None):
    """Parse `argv` with another script's parse_args (a stage of a recipe, a fold of train_folds.py) before
    any work starts: its one-line error becomes a UserError that names `what`. Returns the Namespace."""
    import contextlib
    import io
    from utils.errors import UserError
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parse([str(a) for a in argv])
    except SystemExit as e:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
        detail = lines[-1].split(': error: ', 1)[-1] if lines else f"exit status {e.code}"
        if e.code in (0, None):
            detail = "--help is not an option to pass on"
        detail = detail.rsplit('; see ', 1)[0]  # the help to see is the stage's, not this command's
        raise UserError(f"{what}: {detail}" + (f"; see python3 {script} --help" if script else "")) from None


def data_options():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument('--data_dir', default=None,
                   help="folder with train.csv, sample_submission.csv and the stacked .npy arrays "
                        "(default: the one the snapshot was trained on, else ./data)")
    return p


@dataclass(frozen=True)
class DeviceOptions:
    """How a script runs (never saved with a run): the device options of train.py and the predict scripts."""
    device: str = option('auto', "auto (CUDA when present, else CPU), cpu, cuda or cuda:N", group='device', saved=False)
    amp: str = option('auto', "mixed precision: auto = bf16 on CUDA that supports it, else fp16 with a scaler; off on "
                              "CPU, where bf16 is opt-in (faster training on CPUs with AMX, e.g. Xeon Sapphire Rapids; "
                              "emulated and slower elsewhere)",
                      group='device', saved=False, choices=('auto', 'off', 'bf16', 'fp16'))
    channels_last: str = option('auto', "NHWC memory layout (auto = on: faster on CUDA and on CPU alike)",
                                group='device', saved=False, choices=('auto', 'on', 'off'))
    compile: str | None = option(None, "torch.compile the model, with this mode (reduce-overhead: CUDA graphs, fewer "
                                       "launches); the first epoch pays for the compilation",
                                 group='device', saved=False, nargs='?', const='default',
                                 choices=('default', 'reduce-overhead', 'max-autotune'))
    workers: int = option(-1, "data loader worker processes, for the per-image path (--loader prefetch); -1: none",
                          group='device', saved=False, range=(-1, 1024))
    threads: int = option(0, "CPU threads for torch (0: all cores)", group='device', saved=False, range=(0, 4096))


def device_options():
    p = argparse.ArgumentParser(add_help=False)
    add_options(p, DeviceOptions)
    return p


def probability(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r} is not a number in [0, 1]") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold {v} is outside [0, 1]")
    return v


def probability_or_auto(text):
    return 'auto' if text.strip().lower() == 'auto' else probability(text)


def int_or_auto(text):
    if text.strip().lower() == 'auto':
        return 'auto'
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a pixel count nor auto") from None
