"""The model repository on disk: immutable versions, manifests and aliases."""

from edgetune.store.manifest import Manifest
from edgetune.store.repository import ModelRepository, ModelVersion

__all__ = ["Manifest", "ModelRepository", "ModelVersion"]
