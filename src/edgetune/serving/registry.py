"""Which model versions are loaded, and which version a (name, version-or-alias) request gets.

The hot path is one dict lookup: a route `(name, spec)` -> loaded model. A miss resolves the
spec in the repository and loads the version (lazily, once, even under concurrent requests).
`load` re-reads the repository, so a version imported while the server runs is picked up;
the route moves only after the new version is loaded and warmed, and requests already running
on the old version finish on it (they hold a reference).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from edgetune.errors import FailedPrecondition, ModelLoadError, NotFound
from edgetune.plugins.manager import Plugins
from edgetune.serving.model import ServedModel
from edgetune.serving.session import choose_providers, session_options
from edgetune.settings import Settings
from edgetune.store import ModelRepository, ModelVersion
from edgetune.store.repository import LATEST
from edgetune.task import Task

log = logging.getLogger(__name__)

Key = tuple[str, int]
Listener = Callable[[ModelVersion, bool], Awaitable[None]]
"""Called with (version, loaded) after a version is loaded (True) or unloaded (False)."""


class ModelRegistry:
    """Loaded model versions and the routes that point requests at them."""

    def __init__(
        self,
        repository: ModelRepository,
        plugins: Plugins,
        settings: Settings,
        listeners: tuple[Listener, ...] = (),
    ) -> None:
        self.repository = repository
        self.plugins = plugins
        self.settings = settings
        self.providers = choose_providers(settings.execution_providers)
        self._options = session_options(settings.intra_op_threads, settings.intra_op_spinning)
        self._loaded: dict[Key, ServedModel] = {}
        self._routes: dict[tuple[str, str], ServedModel] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._listeners = listeners

    @property
    def loaded(self) -> dict[Key, ServedModel]:
        """A snapshot of the loaded versions."""
        return dict(self._loaded)

    async def get(self, name: str, spec: str = "") -> ServedModel:
        """The model a request for (name, spec) runs on, loading it on first use."""
        route = (name, spec.strip() or LATEST)
        served = self._routes.get(route)
        if served is not None:
            return served
        return await self._route(route)

    async def load(self, name: str, spec: str = "") -> ServedModel:
        """Resolve (name, spec) in the repository now, load it if needed, and route to it."""
        return await self._route((name, spec.strip() or LATEST))

    async def unload(self, name: str, spec: str = "") -> ModelVersion:
        """Stop routing to a loaded version and drop it; running requests finish on it."""
        version = await asyncio.to_thread(self.repository.resolve, name, spec)
        served = self._loaded.pop(version.key, None)
        if served is None:
            raise FailedPrecondition(f"model {name!r} version {version.version} is not loaded")
        for route in [r for r, s in self._routes.items() if s is served]:
            del self._routes[route]
        await self._notify(version, loaded=False)
        return version

    async def promote(self, name: str, version: int, alias: str = LATEST) -> ServedModel:
        """Point alias at version without dropping a request.

        Loads and warms the version first, then moves the alias on disk and the route in
        one step; the version the route pointed at before is unloaded when nothing routes
        to it any more (requests already running on it finish on it).
        """
        target = await asyncio.to_thread(self.repository.get, name, version)
        served = await self._ensure_loaded(target)
        await asyncio.to_thread(self.repository.set_alias, name, alias, version)
        previous = self._routes.get((name, alias))
        self._routes[(name, alias)] = served
        if previous is not None and previous is not served:
            still_routed = any(s is previous for s in self._routes.values())
            if not still_routed and self._loaded.pop(previous.version.key, None) is not None:
                await self._notify(previous.version, loaded=False)
        return served

    async def _route(self, route: tuple[str, str]) -> ServedModel:
        version = await asyncio.to_thread(self.repository.resolve, *route)
        served = await self._ensure_loaded(version)
        self._routes[route] = served
        return served

    async def _ensure_loaded(self, version: ModelVersion) -> ServedModel:
        lock = self._locks.setdefault(version.key, asyncio.Lock())
        async with lock:
            served = self._loaded.get(version.key)
            if served is None:
                task = self._task_of(version)
                served = await asyncio.to_thread(
                    ServedModel.load,
                    version,
                    task,
                    self._options,
                    self.providers,
                    verify=self.settings.verify_checksums,
                    warmup=self.settings.warmup,
                )
                self._loaded[version.key] = served
                await self._notify(version, loaded=True)
            return served

    def _task_of(self, version: ModelVersion) -> Task:
        try:
            return self.plugins.task(version.manifest.task)
        except NotFound as exc:
            raise ModelLoadError(
                f"model {version.name!r} version {version.version} cannot be served: {exc.message}"
            ) from None

    async def _notify(self, version: ModelVersion, *, loaded: bool) -> None:
        for listener in self._listeners:
            await listener(version, loaded)
