"""What this install can do: serving always; fine-tuning and import-model only with the
`train` extra (torch, transformers, Optimum...), which a serving-only install leaves out."""

from __future__ import annotations

import functools
from importlib.util import find_spec

from edgetune.errors import FailedPrecondition

TRAIN_MODULES = ("torch", "transformers", "accelerate", "optimum", "onnx", "optuna", "sklearn")
"""Top-level modules of the train extra (looked up, never imported, to check)."""


@functools.cache
def missing_train_modules() -> tuple[str, ...]:
    """Modules of the train extra this install lacks."""
    return tuple(name for name in TRAIN_MODULES if find_spec(name) is None)


def capabilities() -> list[str]:
    """ "serving", and "fine-tuning" (also import-model) when the train extra is installed."""
    return ["serving", *(["fine-tuning"] if not missing_train_modules() else [])]


def require_train(what: str) -> None:
    """:raises FailedPrecondition: naming the extra to install, without the train extra."""
    missing = missing_train_modules()
    if missing:
        raise FailedPrecondition(
            f"{what} needs the train extra, which this install lacks ({', '.join(missing)} "
            "missing): pip install 'edgetune[train]'"
        )
