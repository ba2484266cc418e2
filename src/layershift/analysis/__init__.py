"""Comparisons of the two stages: per-layer similarity and its sentence bootstrap, feature statistics, the settings
sweep, chance levels, the feature diff and the crosscoder's latent table. Imports ``core``, ``study``, ``data``, ``models`` and ``dictionaries``."""
