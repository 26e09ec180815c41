"""Data-side code shared by the scripts: run-length encoding, the metric, datasets, I/O."""
