"""Who may call what: the authenticator contract and the scope each method needs.

An `Authenticator` (registered by a plugin through `edgetune_register_authenticators`;
the built-in one checks bearer tokens) turns a call's metadata into a `Principal` with
scopes. `required_scope` maps every RPC to the scope it needs:

* `infer` — classify (edgetune.v1 Inference, KServe v2 inference and metadata), read model
  and server information;
* `finetune` — everything in edgetune.v1 FineTuning;
* `admin` — load, unload and alias models, and any method not listed here;
* nothing — health checks, reflection, and v2 ServerLive / ServerReady stay open, so
  probes and tooling work without credentials.

Scopes do not imply each other: a token that may administer models and classify carries both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from edgetune.settings import Settings

INFER, FINETUNE, ADMIN = "infer", "finetune", "admin"
SCOPES = (INFER, FINETUNE, ADMIN)

_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_OPEN = {
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
}
_BY_SERVICE = {
    "/edgetune.v1.Inference/": INFER,
    "/edgetune.v1.Server/": INFER,
    "/inference.GRPCInferenceService/": INFER,
    "/edgetune.v1.FineTuning/": FINETUNE,
}
_BY_METHOD = {
    "/edgetune.v1.Models/ListModels": INFER,
    "/edgetune.v1.Models/GetModel": INFER,
}


def required_scope(method: str) -> str | None:
    """The scope a full method name ("/package.Service/Method") needs; None when open."""
    if method in _OPEN or method.startswith(_OPEN_PREFIXES):
        return None
    if method in _BY_METHOD:
        return _BY_METHOD[method]
    for prefix, scope in _BY_SERVICE.items():
        if method.startswith(prefix):
            return scope
    return ADMIN


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    scopes: frozenset[str]


class Authenticator(ABC):
    """Turns call metadata into a Principal. Must be thread-safe and fast: it runs on every
    call that needs a scope."""

    name: ClassVar[str]
    """What `EDGETUNE_AUTH` names to pick it, e.g. "token"."""

    def configure(self, settings: Settings) -> None:  # noqa: B027 - optional hook
        """Called once when the server starts, before any call."""

    @abstractmethod
    def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        """The caller behind these (lower-case keyed) metadata.

        :raises edgetune.errors.Unauthenticated: no credentials, or ones it does not accept.
        """
