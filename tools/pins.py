"""The pinned versions that `make` installs: write requirements.lock, or one install's constraints.

    python3 tools/pins.py lock              # requirements.lock from the packages this Python has
    python3 tools/pins.py constraints OUT   # requirements.lock, but what this venv's Python already
                                            # has from outside the venv, in range, stays (SYSTEM_SITE=1)

requirements.txt and requirements-dev.txt give the ranges the pipeline works with; the lock pins
the one version of every package they need, directly or not, that was installed and tested
together. `make lock` regenerates it in a fresh venv (see the README). `constraints` runs before
anything is installed, so it uses the standard library only.
"""
import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME, DEV, LOCK = ROOT / 'requirements.txt', ROOT / 'requirements-dev.txt', ROOT / 'requirements.lock'
# torchvision is built for one torch release: kept with an outside torch, it must not be pinned either.
GOES_WITH = {'torchvision': 'torch'}
_SPEC = re.compile(r'\s*(==|!=|>=|<=|>|<|~=)\s*([0-9][0-9A-Za-z.+!*-]*)\s*$')


def canonical(name):
    """A distribution name as pip compares them: lower case, runs of -_. as one dash."""
    return re.sub(r'[-_.]+', '-', name).lower()


def read_requirements(path):
    """{canonical name: [(op, version)]} of a requirements file (name and comma-separated specifiers)."""
    out = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        m = re.match(r'([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$', line)
        if not m or ';' in line or '[' in line or line.startswith('-'):
            raise ValueError(f"{path}: cannot read {raw!r}; write NAME followed by specifiers like >=1.2,<2")
        specs = []
        for part in filter(None, (p.strip() for p in m.group(2).split(','))):
            s = _SPEC.match(part)
            if not s:
                raise ValueError(f"{path}: cannot read the specifier {part!r} in {raw!r}")
            specs.append((s.group(1), s.group(2)))
        out[canonical(m.group(1))] = specs
    return out


def release(version):
    """The numeric release of a version, for comparisons: '2.14.1+cu130' -> (2, 14, 1)."""
    m = re.match(r'(?:\d+!)?(\d+(?:\.\d+)*)', version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(x) for x in m.group(1).split('.'))


def _cmp(a, b):
    n = max(len(a), len(b))
    a, b = a + (0,) * (n - len(a)), b + (0,) * (n - len(b))
    return (a > b) - (a < b)


def satisfies(version, specs):
    """Whether version meets every (op, version) of specs, compared by numeric release."""
    v = release(version)
    for op, want in specs:
        w = release(want.rstrip('.*'))
        if op == '==' and want.endswith('.*'):
            ok = v[:len(w)] == w
        elif op == '~=':
            ok = _cmp(v, w) >= 0 and v[:len(w) - 1] == w[:-1]
        else:
            c = _cmp(v, w)
            ok = {'==': c == 0, '!=': c != 0, '>=': c >= 0, '<=': c <= 0, '>': c > 0, '<': c < 0}[op]
        if not ok:
            return False
    return True


def read_lock(path=LOCK):
    """{canonical name: pinned version} of the lock."""
    pins = {}
    for name, specs in read_requirements(path).items():
        if len(specs) != 1 or specs[0][0] != '==':
            raise ValueError(f"{path}: {name} is not pinned with ==; regenerate it with make lock")
        pins[name] = specs[0][1]
    return pins


def _outside_this_venv(dist):
    """Whether an installed distribution lives outside this venv (the system site of a --system-site-packages venv)."""
    if sys.prefix == sys.base_prefix:
        return False
    where = Path(str(dist.locate_file(''))).resolve()
    return Path(sys.prefix).resolve() not in (where, *where.parents)


def kept_from_outside(pins, ranges):
    """{name: version to pin, or None to leave unpinned} for the locked packages kept from outside this venv.

    A package the requirements name, installed outside at a version in range, is pinned to that
    version, so that nothing pulls in another one (a torchvision built for a newer torch, say). A
    dependency they do not name, installed outside, is left unpinned whatever its version. A
    package that goes with another (GOES_WITH) follows it: with the partner kept, it is pinned to
    its own outside version when that is in range, else left to pip, which picks the release built
    for the partner; otherwise it keeps its lock pin.
    """
    first = {}
    for dist in metadata.distributions():  # in sys.path order: the first of a name is the one imported
        first.setdefault(canonical(dist.metadata['Name'] or ''), dist)
    kept = {}
    for name, dist in first.items():
        if name in pins and _outside_this_venv(dist):
            if name not in ranges:
                kept[name] = None
            elif satisfies(dist.version, ranges[name]):
                kept[name] = dist.version
    for name, partner in GOES_WITH.items():
        if partner in kept:
            kept[name] = kept.get(name)
        else:
            kept.pop(name, None)
    return kept


def write_constraints(out):
    """Write the lock's pins, with the packages kept_from_outside pinned to their version or left out."""
    pins = read_lock()
    ranges = {**read_requirements(DEV), **read_requirements(RUNTIME)}
    kept = kept_from_outside(pins, ranges)
    lines = [f"{name}=={kept.get(name) or pins[name]}" for name in sorted(pins)
             if name not in kept or kept[name]]
    Path(out).write_text('# made by tools/pins.py from requirements.lock\n' + '\n'.join(lines) + '\n')
    named = [n for n in sorted(kept) if n in ranges]
    if named:
        print("pins: keeping from outside the venv: "
              + ', '.join(f"{n} {kept[n]}" if kept[n] else f"{n} (the release for {GOES_WITH[n]})" for n in named)
              + f"; {len(kept) - len(named)} of its other packages left unpinned")


def closure(names):
    """{canonical name: installed version} of names and everything they require, with its extras, here."""
    from packaging.requirements import Requirement
    found, todo = {}, [(canonical(n), frozenset()) for n in names]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"pins: {name} is not installed here; install the requirements first "
                             f"(make lock does it in a fresh venv)") from None
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in extras | {''}):
                todo.append((canonical(req.name), frozenset(req.extras)))
    return found


def write_lock(path=LOCK):
    """requirements.lock: the runtime closure, then what only the tests add, each name == its version."""
    runtime = closure(read_requirements(RUNTIME))
    dev = {k: v for k, v in closure(read_requirements(DEV)).items() if k not in runtime}
    py = '.'.join(map(str, sys.version_info[:3]))
    text = ["# Every package requirements.txt and requirements-dev.txt need, pinned to the versions installed",
            f"# and tested together (Python {py}). `make` installs with this file as constraints (-c).",
            "# Regenerate after changing a requirements file: make lock (see the README).",
            "", "# runtime (requirements.txt and what it pulls in)"]
    text += [f"{name}=={runtime[name]}" for name in sorted(runtime)]
    text += ["", "# tests only (requirements-dev.txt and what it pulls in)"]
    text += [f"{name}=={dev[name]}" for name in sorted(dev)]
    Path(path).write_text('\n'.join(text) + '\n')
    print(f"pins: wrote {path} ({len(runtime)} runtime, {len(dev)} test-only packages)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    sub.add_parser('lock', help="write requirements.lock from the packages this Python has")
    c = sub.add_parser('constraints', help="write the constraints for installing into this Python's venv")
    c.add_argument('out')
    args = p.parse_args(argv)
    try:
        if args.command == 'lock':
            write_lock()
        else:
            write_constraints(args.out)
    except ValueError as e:
        raise SystemExit(f"pins: {e}") from None


if __name__ == '__main__':
    main()
