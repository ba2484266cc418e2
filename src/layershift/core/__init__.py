"""Foundations every layer uses: errors, atomic file I/O, the job runtime (threads, memory, signals), and the
training loop with its checkpoints. Imports nothing else of layershift."""
