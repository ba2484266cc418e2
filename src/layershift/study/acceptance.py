"""The bars the study holds its SAEs to, in one place: the settings sweep, the findings and the independent check
of saved SAEs (``bench/check_saes.py``) read them from here."""

MIN_EXPLAINED_VARIANCE = (
    0.6  # held-out explained variance below this: the SAE stands for too little of the layer
)
MIN_SEED_NULL_MEDIAN_COSINE = 0.7  # median matched decoder cosine between an SAE and its seed null
MIN_SHARE_ABOVE_CHANCE = (
    0.8  # share of live features whose seed-null match beats the random-matching 99th pct
)
