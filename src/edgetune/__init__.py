"""edgetune: low-latency ONNX Runtime classification over gRPC that fine-tunes on request."""

from importlib.metadata import PackageNotFoundError, version

from edgetune.plugins import hookimpl

try:
    __version__ = version("edgetune")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
