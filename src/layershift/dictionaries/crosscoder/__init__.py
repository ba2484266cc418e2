"""Sparse crosscoders for model diffing: config, model, files, training and evaluation (the latent table that
reads them is ``analysis.crosscoder_latents``). Imports ``core``, ``study``, ``data`` and shared ``dictionaries``."""
