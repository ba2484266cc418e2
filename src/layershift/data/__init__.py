"""Text in, token rows out: dataset preparation (clean, cap, split), tokenisation helpers, length-grouped
batching, and every read and write of activation shards. Imports ``core`` and ``study``."""
