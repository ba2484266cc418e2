"""What a reader sees: seaborn figures, summary tables, the similarity intervals (bands, cells), the findings (real and
synthetic corpora side by side), the one-file HTML report and the Markdown results page. Imports every layer below it (``core`` to ``analysis``), never ``costs``."""
