"""The one path bootstrap: lets the scripts of utils/ run as files without the project installed.

`python3 utils/stack_and_save.py` and `cd utils && python3 stack_and_save.py` (the original's
command) put utils/ itself first on sys.path, where `import utils.data` cannot be found; with the
project installed (make, or pip install -e .) it would be found, but perhaps from another
checkout. Those scripts import this module when they run as files (no __package__), and it puts
this checkout's root in utils/'s place, as `python3 -m utils.stack_and_save` would have it; the
root's own scripts (train.py, predict.py, ...) need nothing, Python puts their folder first.
"""
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_ROOT = str(_HERE.parent)

if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _HERE:
    sys.path[0] = _ROOT  # utils/'s modules must not stand in for top-level ones (io, data, ...)
elif _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
