"""Sparse dictionaries over one layer's activations: SAEs, crosscoders, their shared training loop, weights and
decoder geometry, the sparse training path and the SAELens file format. Imports ``core``, ``study`` and ``data``."""
