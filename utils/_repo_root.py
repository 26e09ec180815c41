"""The one path bootstrap: lets the scripts of utils/, tools/ and benchmarks/ run as files and import
this checkout's modules.

`python3 utils/stack_and_save.py`, `cd utils && python3 stack_and_save.py` (the original's command)
or `python3 tools/demo.py` put the script's own folder first on sys.path. There `import utils.data`
is not found, or, with a project installed (make, or pip install -e .), found in the installed
checkout, which may be another one (a git worktree, a second clone): the script would then run
that checkout's code. Those scripts import this module when they run as files (no __package__);
it puts this checkout's root in their folder's place, as `python3 -m utils.stack_and_save` would
have it. tools/ and benchmarks/ reach it through their own `_repo_root.py`, which runs this file.
The root's own scripts (train.py, predict.py, ...) need nothing: Python puts their folder first.
"""
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _first_is_a_folder_of_the_root():
    if not (sys.path and sys.path[0]):
        return False
    first = Path(sys.path[0]).resolve()
    return first.parent == _ROOT


if _first_is_a_folder_of_the_root():
    sys.path[0] = str(_ROOT)  # utils/'s modules must not stand in for top-level ones (io, data, ...)
else:
    while str(_ROOT) in sys.path:
        sys.path.remove(str(_ROOT))
    sys.path.insert(0, str(_ROOT))  # before any other checkout on PYTHONPATH or installed
