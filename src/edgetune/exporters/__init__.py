"""Turning trained transformers models into servable ONNX model versions."""
