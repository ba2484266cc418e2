"""layershift: how fine-tuning changes a transformer, layer by layer, seen through sparse autoencoders.

The library behind the Snakemake workflow. Every module holds one concept and takes plain arguments
(paths, tensors, DataFrames), so it is testable without Snakemake.
"""

__version__ = "0.1.0"
