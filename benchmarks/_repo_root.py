"""Run as files, the scripts of this folder import this checkout's modules, not an installed
checkout's: importing this runs the one path bootstrap, utils/_repo_root.py."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / 'utils' / '_repo_root.py'))
