"""Comparisons of the two stages: per-layer similarity and its sentence bootstrap, feature statistics, the settings
sweep, chance levels, the feature diff, the crosscoder's latent table, and the aggregation over fine-tuning
replicates (intervals over runs and the between-run test). Imports ``core``, ``study``, ``data``, ``models`` and ``dictionaries``."""
