"""Text in, token rows out: dataset sources (files, hub, package files), cleaning, preparation (filter, cap, split),
tokenisation helpers, length-grouped batching, and every read and write of activation shards. Imports ``core``, ``study``."""
