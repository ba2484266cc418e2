"""The feature diff of two stages' SAEs: matching, chance levels, thresholds, labels, verdict and the pipeline
that runs them (``pipeline.diff_saes``). Imports ``core``, ``data``, ``dictionaries`` and ``analysis.chance``."""
