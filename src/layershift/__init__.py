"""layershift: how fine-tuning changes a transformer, layer by layer, seen through sparse autoencoders.

The library behind the Snakemake workflow, in layers that import downward only:
``core`` < ``study`` < ``data`` < ``models`` < ``dictionaries`` < ``analysis`` < ``report``; ``costs`` sits beside
``report``; the top-level ``config`` (whole-study checks) and ``cli`` may use them all. Functions take plain
arguments (paths, tensors, DataFrames), so everything is testable without Snakemake.
"""

__version__ = "0.1.0"
