"""Sparse dictionaries over one layer's activations: SAEs, crosscoders, their shared training loop, weights, codes
(encoding and firing counts) and decoder geometry, and the SAELens file format. Imports ``core``, ``study``, ``data``."""
