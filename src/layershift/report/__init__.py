"""What a reader sees: seaborn figures, summary tables and the one-file HTML report. Imports every layer below
it (``core`` to ``analysis``), never ``costs``."""
