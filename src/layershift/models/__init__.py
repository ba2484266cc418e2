"""The encoders: where a model comes from (hub, path, package, ONNX import), the classifier with its batches,
optimiser and metrics, fine-tuning, evaluation, hidden-state extraction and probe sentences. Imports ``core``,
``study`` and ``data``."""
