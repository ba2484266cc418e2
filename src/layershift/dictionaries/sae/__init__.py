"""Sparse autoencoders on one layer's token activations: config, model, files (SAELens layout), training and
evaluation. Imports ``core``, ``study``, ``data`` and the shared ``dictionaries`` modules."""
