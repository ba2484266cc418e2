"""The feature diff of two stages' SAEs: matching, chance levels, thresholds, labels, verdict (with its feature
resamples) and the pipeline that runs them (``pipeline.diff_saes``). Imports ``core``, ``data``, ``dictionaries`` and ``analysis.chance``."""
