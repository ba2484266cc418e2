"""Comparisons of the two stages: per-layer similarity, feature statistics, the settings sweep, chance levels and
the feature diff. Imports ``core``, ``study``, ``data``, ``models`` and ``dictionaries``."""
