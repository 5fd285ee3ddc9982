"""The model repository: immutable versions, manifests and aliases, in a folder or (the
`s3` extra) a bucket."""

from edgetune.store.manifest import Manifest
from edgetune.store.repository import ModelRepository, ModelVersion, Repository, open_repository

__all__ = ["Manifest", "ModelRepository", "ModelVersion", "Repository", "open_repository"]
