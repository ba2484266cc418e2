"""Foundations every layer uses: errors, atomic file I/O, device/threads/seeds, the job runtime (log, memory,
signals), and the training loop with its checkpoints. Imports nothing else of layershift."""
