"""The hot path: loaded model versions, ONNX Runtime sessions and the inference service."""
