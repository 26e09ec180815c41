"""Recipes as files: a recipe.py run's stages, each a table of train.py options and its minutes per fold.

    description = "..."            # one line, printed by recipe.py
    folds = "0-4"                  # the folds trained unless recipe.py --folds says otherwise
    [train]                        # train.py options of every stage (by dest: batch_size, train_augs, ...)
    [stage1]  minutes = 20.0 ...   # stage 1's minutes per fold and its own options (they win over [train])
    [stage2]  minutes = 10.0 ...   # from stage 1's best snapshot
    [stage3]  minutes = 10.0 ...   # with --pseudo: from stage 2's best, stage 2's options plus these

The presets of ``recipe.py --preset NAME`` are recipes/NAME.toml. A value is a string, a number or a
boolean (true: the flag is given; false: left out). Reading is checked: an unknown table or key, a key
that is not a train.py option, a value of the wrong kind, or an option the recipe sets itself is one
line naming the file and the key.
"""
import tomllib
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

RECIPES = Path(__file__).resolve().parents[1] / 'recipes'
STAGES = ('stage1', 'stage2', 'stage3')
TOP = {'description': str, 'folds': str}
# What recipe.py (and train_folds.py under it) sets for each stage itself.
OWNED = ('fold', 'experiment_dir', 'data_dir', 'init', 'device', 'amp', 'resume', 'overwrite', 'max_minutes')


@dataclass(frozen=True)
class Recipe:
    path: Path
    description: str
    folds: str
    train: dict          # option dest -> value, shared by every stage
    stages: dict         # 'stage1' | 'stage2' | 'stage3' -> its own options (dest -> value)
    minutes: tuple       # per fold: (stage 1, stage 2, stage 3)

    @property
    def name(self):
        return self.path.stem

    def options(self, stage):
        """The option dict of `stage` ('stage1', ...): [train], then stage 2's for stage 3, then its own."""
        out = dict(self.train)
        if stage == 'stage3':
            out.update(self.stages['stage2'])
        out.update(self.stages[stage])
        return out


def preset_names():
    return sorted(p.stem for p in RECIPES.glob('*.toml'))


def preset_path(name):
    path = RECIPES / f'{name}.toml'
    if not path.is_file():
        raise UserError(f"no recipe preset {name!r}; pick one of {', '.join(preset_names())}, or pass "
                        f"--recipe FILE")
    return path


def as_argv(options):
    """train.py's command-line tokens for an option dict (dest -> value), in the dict's order."""
    argv = []
    for key, value in options.items():
        if value is True:
            argv.append(f'--{key}')
        elif value is not False:
            argv += [f'--{key}', str(value)]
    return argv


def load_recipe(path, actions):
    """The Recipe in TOML file `path`, checked against `actions` (train.py's {dest: argparse action})."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise UserError(f"recipe {path} does not exist; pass a recipe file (e.g. recipes/cpu.toml) or "
                        f"--preset {' | '.join(preset_names())}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"recipe {path} cannot be read ({e}); pass a readable TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe {path} is not valid TOML ({e}); fix it, or start again from a copy of "
                        f"recipes/cpu.toml") from None

    def bad(where, problem):
        raise UserError(f"recipe {path}: {where} {problem}")

    for key, value in raw.items():
        if key in TOP:
            if not isinstance(value, TOP[key]):
                bad(key, f"must be a {TOP[key].__name__}; got {value!r}")
        elif key not in ('train', *STAGES):
            bad(key, f"is not a recipe key; a recipe has {', '.join([*TOP, 'train', *STAGES])}")
        elif not isinstance(value, dict):
            bad(key, "must be a table ([" + key + "])")
    for table in ('stage1', 'stage2'):
        if table not in raw:
            bad(f"[{table}]", "is missing; a recipe has [stage1] and [stage2], each with its minutes")

    def options_of(table, allow_minutes):
        out = {}
        for key, value in raw.get(table, {}).items():
            where = f"[{table}] {key}"
            if key == 'minutes':
                if not allow_minutes:
                    bad(where, "belongs in a stage's table, not in [train]")
                continue
            if key in OWNED:
                bad(where, f"is set by recipe.py for each stage ({'the stage minutes' if key == 'max_minutes' else 'its own option'}); "
                           f"leave it out")
            action = actions.get(key)
            if action is None:
                bad(where, "is not a train.py option; python3 train.py --help lists them (by name, without the dashes)")
            flag = action.nargs == 0
            if isinstance(value, bool) != flag or isinstance(value, (dict, list)):
                bad(where, "is a flag: true or false" if flag else f"needs a value (e.g. --{key} VALUE); got {value!r}")
            if not flag:
                check_value(where, action, value, bad)
            out[key] = value
        return out

    train = options_of('train', False)
    stages, minutes = {}, []
    for table in STAGES:
        stages[table] = options_of(table, True)
        m = raw.get(table, {}).get('minutes', minutes[-1] if table == 'stage3' else None)
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 10 ** 6:
            bad(f"[{table}] minutes", f"must be a positive number of minutes per fold; got {m!r}")
        minutes.append(float(m))
    return Recipe(path=path, description=raw.get('description', ''), folds=raw.get('folds', '0-4'),
                  train=train, stages=stages, minutes=tuple(minutes))


def check_value(where, action, value, bad):
    """`value` as the option's own parser would take it: of its type, and one of its choices."""
    text = str(value)
    if callable(action.type):
        try:
            text = action.type(text)
        except (ValueError, TypeError):
            bad(where, f"is {value!r}, which --{action.dest} does not take (python3 train.py --help)")
        except Exception as e:  # an argparse type function's own message
            bad(where, f"is {value!r}: {e}")
    if action.choices is not None and text not in action.choices:
        bad(where, f"is {value!r}, not one of: {', '.join(map(str, sorted(action.choices)))}")
