"""Sparse dictionaries over one layer's activations: SAEs, crosscoders, their sparse training path, their
codes (encoding and firing counts) and the SAELens file format. Imports ``core``, ``study`` and ``data``."""
