"""Options as dataclass fields: one field is one command-line option, its default, help, range and group.

    @dataclass(frozen=True)
    class Mine:
        batch_size: int = option(32, "images per step", group='optimizer', range=(1, 1 << 16))

    add_options(parser, Mine)          # --batch_size, in an argument group 'optimizer'
    mine = from_namespace(Mine, parser.parse_args(argv))
    check_ranges(parser, mine, ranges_of(Mine))

A field's metadata: help, group, range (lo, hi) checked at parse time, saved (written into the run's
config files; False for how a run is carried out, e.g. the device), cli (False: not an option, e.g. a
value the script sets) and argparse keywords (choices as a callable for a registry, metavar, nargs,
const, action, type). A field's annotation gives the option's type (int, float, str, bool for a flag).
"""
import dataclasses
import typing

_PASSED = ('metavar', 'nargs', 'const', 'required')


def option(default, help='', *, group='run', range=None, saved=True, cli=True, choices=None, type=None, **argparse_kw):
    """A dataclass field that is also a command-line option (see the module's docstring)."""
    unknown = set(argparse_kw) - set(_PASSED)
    if unknown:
        raise TypeError(f"option(): unknown keywords {sorted(unknown)}")
    meta = dict(help=help, group=group, range=range, saved=saved, cli=cli, choices=choices, type=type, **argparse_kw)
    if isinstance(default, (list, dict, set)):
        raise TypeError("option(): a mutable default")
    return dataclasses.field(default=default, metadata=meta)


def fields_of(cls, **where):
    """The dataclass fields of `cls` whose metadata match `where` (e.g. saved=True)."""
    return [f for f in dataclasses.fields(cls) if all(f.metadata.get(k) == v for k, v in where.items())]


def value_type(annotation):
    """int for `int`, `int | None` or 'int | None'; the option's value type."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {'typing': typing})  # the module's own annotations (from __future__)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_options(parser, cls, defaults=None, groups=None, only=None, helps=None):
    """One argparse option per cli field of `cls`, in argument groups by the fields' group (the order of first
    appearance). defaults: {name: value} that replace the fields' own (e.g. train_border.py's arch).
    groups: {group name: title}, in the order of the help; a group not in it comes after, titled by its name.
    only: the names of the fields to make options of (default: every cli field). helps: {name: help} that
    replace the fields' own (a script's own wording)."""
    defaults, helps = defaults or {}, helps or {}
    chosen = [f for f in fields_of(cls, cli=True) if only is None or f.name in only]
    used = {f.metadata['group'] for f in chosen}
    made = {g: parser.add_argument_group(title) for g, title in (groups or {}).items() if g in used}
    for f in chosen:
        m = dict(f.metadata, help=helps.get(f.name, f.metadata['help']))
        g = m['group']
        if g not in made:
            made[g] = parser.add_argument_group((groups or {}).get(g, g))
        kind = value_type(f.type)
        default = defaults.get(f.name, f.default)
        kw = {k: m[k] for k in _PASSED if k in m}
        if kind is bool and m.get('type') is None:
            made[g].add_argument(f'--{f.name}', action='store_true', default=default, help=m['help'])
            continue
        choices = m['choices']
        if callable(choices):
            choices = choices()
        kw['type'] = m['type'] or (kind if kind in (int, float) else None)
        if choices is not None:
            kw['choices'] = sorted(choices)
        made[g].add_argument(f'--{f.name}', default=default, help=m['help'] or None, **kw)
    return made


def ranges_of(cls):
    """{name: (lo, hi)} of the fields that have a range."""
    return {f.name: f.metadata['range'] for f in dataclasses.fields(cls) if f.metadata.get('range')}


def from_namespace(cls, ns, **more):
    """An instance of `cls` from a parsed Namespace (its attributes of the same names) and `more`."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    values.update(more)
    return cls(**values)


def saved_dict(obj):
    """{name: value} of the fields that are saved with a run."""
    return {f.name: getattr(obj, f.name) for f in fields_of(type(obj), saved=True)}
