"""Which model versions are loaded, and which version a (name, version-or-alias) request gets.

The hot path is one dict lookup: a route `(name, spec)` -> loaded model. A miss resolves the
spec in the repository and loads the version (lazily, once, even under concurrent requests).
`load` re-reads the repository, so a version imported while the server runs is picked up;
the route moves only after the new version is loaded and warmed, and requests already running
on the old version finish on it (they hold a reference).

States: a version is LOADED exactly when a request for it is answered without a load,
LOADING while a load runs, FAILED when its last load failed (a request retries), else
AVAILABLE. `load_at_startup` loads what `model_control` asks for before the server says
it is ready.

Memory: each loaded version is counted as the resident memory its load added. Under a
budget (`memory_budget_mb`), loading one more version first evicts the least recently used
versions that are not pinned (`pinned_models`); an evicted version loads again on its next
request. Loads run one at a time, so each one's measurement is its own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable

import onnxruntime as ort

from edgetune.errors import (
    EdgetuneError,
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    ResourceExhausted,
)
from edgetune.plugins.manager import Plugins
from edgetune.serving.memory import release_free_memory
from edgetune.serving.model import ServedModel
from edgetune.serving.observe import Observer
from edgetune.serving.session import CPU, choose_providers, session_options
from edgetune.settings import Settings
from edgetune.store import ModelVersion, Repository
from edgetune.store.model_settings import ModelSettings
from edgetune.store.repository import LATEST
from edgetune.task import Task

log = logging.getLogger(__name__)

Key = tuple[str, int]
MIB = 2**20
Listener = Callable[[ModelVersion, bool], Awaitable[None]]
"""Called with (version, loaded) after a version is loaded (True) or unloaded (False), and
with (version, True) after an alias of its model moved to it."""


class ModelStatus(enum.StrEnum):
    """Where a version stands in this process (ModelInfo.state)."""

    AVAILABLE = "available"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


class ModelRegistry:
    """Loaded model versions and the routes that point requests at them."""

    def __init__(
        self,
        repository: Repository,
        plugins: Plugins,
        settings: Settings,
        listeners: tuple[Listener, ...] = (),
        observer: Observer | None = None,
    ) -> None:
        self.repository = repository
        self.plugins = plugins
        self.settings = settings
        self.providers = choose_providers(settings.runtime.execution_providers)
        self._options = self._session_options_for(
            settings.runtime.intra_op_threads, settings.runtime.intra_op_spinning
        )
        self._loaded: dict[Key, ServedModel] = {}
        self._charges: dict[Key, int] = {}  # the most each version was measured at
        self._routes: dict[tuple[str, str], ServedModel] = {}
        self._load_lock = asyncio.Lock()
        self.listeners = list(listeners)
        self.observer = observer or Observer()
        self._loading: set[Key] = set()
        self._failed: dict[Key, str] = {}
        self.budget_bytes = int(settings.runtime.memory_budget_mb * MIB)
        self._pinned = set(settings.runtime.pinned_models)

    @property
    def loaded(self) -> dict[Key, ServedModel]:
        """A snapshot of the loaded versions."""
        return dict(self._loaded)

    @property
    def models_bytes(self) -> int:
        """Memory counted for the loaded versions together."""
        return sum(served.memory_bytes for served in self._loaded.values())

    def pinned(self, version: ModelVersion) -> bool:
        """Whether the settings pin this version (by name, or by name:version)."""
        return version.name in self._pinned or f"{version.name}:{version.version}" in self._pinned

    def status(self, version: ModelVersion) -> tuple[ModelStatus, str]:
        """The version's state, and why its last load failed when it did."""
        if version.key in self._loaded:
            return ModelStatus.LOADED, ""
        if version.key in self._loading:
            return ModelStatus.LOADING, ""
        if version.key in self._failed:
            return ModelStatus.FAILED, self._failed[version.key]
        return ModelStatus.AVAILABLE, ""

    def routed(self, name: str, spec: str = "") -> ModelVersion:
        """The version a request for (name, spec) runs on now: the loaded one it is routed
        to, else the one the repository resolves (an alias moved on disk, as an import or
        an unpromoted job does, takes effect at the next load or promotion)."""
        served = self._routes.get((name, spec or LATEST))
        if served is not None:
            return served.version
        return self.repository.resolve(name, spec)

    def ready(self, name: str, spec: str = "") -> bool:
        """Whether a request for (name, spec) would be answered without a load; false for
        a model or version that does not exist."""
        try:
            version = self.routed(name, spec)
        except (NotFound, InvalidArgument):
            return False
        return version.key in self._loaded

    async def load_at_startup(self, model_control: str) -> None:
        """Load the pinned models, and with model_control "all" the `latest` version of
        every model (most recently published first) that fits the memory budget without
        evicting one loaded before it. A version that cannot load is logged and left
        FAILED; one that does not fit stays AVAILABLE (it loads on its first request)."""
        wanted = []  # (the route it serves, the version), pinned first
        for route in self.settings.runtime.pinned_routes:  # they resolved when the server started
            wanted.append((route, await asyncio.to_thread(self.repository.resolve, *route)))
        if model_control == "all":
            latest = []
            try:
                names = await asyncio.to_thread(self.repository.model_names)
            except EdgetuneError as exc:  # a bucket that cannot be listed now, say
                log.error("cannot list the models at start-up: %s", exc.message)
                names = []
            for name in names:
                try:
                    latest.append(await asyncio.to_thread(self.repository.resolve, name))
                except EdgetuneError as exc:
                    log.error("model %r cannot be loaded at start-up: %s", name, exc.message)
            latest.sort(key=_published, reverse=True)
            # Routed as `latest`, as a request without a version would route it.
            wanted += [((version.name, LATEST), version) for version in latest]
        for route, version in wanted:
            if version.key in self._loaded:
                continue
            try:
                served = await self._ensure_loaded(version, evict=False)
            except ResourceExhausted as exc:
                log.warning("not loaded at start-up: %s", exc.message)
                continue
            except EdgetuneError as exc:
                log.error(
                    "model %s:%d failed to load at start-up: %s",
                    version.name,
                    version.version,
                    exc.message,
                )
                continue
            self._routes.setdefault(route, served)

    def check_pinned(self) -> None:
        """Resolve every pinned model, so a name or version that does not exist stops the
        start instead of leaving the server without it.

        :raises NotFound: naming the pinned model or version.
        """
        for name, spec in self.settings.runtime.pinned_routes:
            self.repository.resolve(name, spec)

    async def get(self, name: str, spec: str = "") -> ServedModel:
        """The model a request for (name, spec) runs on, loading it on first use."""
        route = (name, spec or LATEST)
        served = self._routes.get(route)
        if served is None:
            served = await self._route(route)
        served.last_used = time.monotonic()
        return served

    async def load(self, name: str, spec: str = "") -> ServedModel:
        """Resolve (name, spec) in the repository now, load it if needed, and route to it."""
        return await self._route((name, spec or LATEST))

    async def unload(self, name: str, spec: str = "") -> ModelVersion:
        """Stop routing to a loaded version and drop it; running requests finish on it."""
        version = await asyncio.to_thread(self.repository.resolve, name, spec)
        served = self._loaded.get(version.key)
        if served is None:
            raise FailedPrecondition(f"model {name!r} version {version.version} is not loaded")
        await self._drop(served)
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
        await self._notify(served.version, loaded=True)  # the alias moved: readiness may change
        if previous is not None and previous is not served:
            still_routed = any(s is previous for s in self._routes.values())
            if not still_routed and previous.version.key in self._loaded:
                await self._drop(previous)
        return served

    async def follow(self) -> list[ModelVersion]:
        """Re-resolve every route in the repository and switch those whose alias moved (a
        version another process published or promoted): load and warm the new version,
        then move the route, as `promote` does, without writing the alias. A version that
        cannot load is logged and the route stays where it was.

        :return: the versions switched to.
        """
        switched = []
        for route, served in list(self._routes.items()):
            try:
                version = await asyncio.to_thread(self.repository.resolve, *route)
                if version.key == served.version.key:
                    continue
                target = await self._ensure_loaded(version)
            except EdgetuneError as exc:
                log.error("cannot follow %s:%s: %s", *route, exc.message)
                continue
            if self._routes.get(route) is not served:
                continue  # a request or a promotion moved it meanwhile
            self._routes[route] = target
            await self._notify(target.version, loaded=True)
            if not any(s is served for s in self._routes.values()) and (
                served.version.key in self._loaded
            ):
                await self._drop(served)
            log.info("%s:%s now routes to version %d", *route, target.version.version)
            switched.append(target.version)
        return switched

    async def _route(self, route: tuple[str, str]) -> ServedModel:
        version = await asyncio.to_thread(self.repository.resolve, *route)
        served = await self._ensure_loaded(version)
        self._routes[route] = served
        return served

    async def _ensure_loaded(self, version: ModelVersion, evict: bool = True) -> ServedModel:
        # Shielded: a caller that gives up (deadline, cancel) does not throw away a load that
        # is half done; the next request for the model finds it loaded.
        return await asyncio.shield(self._load(version, evict))

    async def _load(self, version: ModelVersion, evict: bool) -> ServedModel:
        async with self._load_lock:
            served = self._loaded.get(version.key)
            if served is not None:
                return served
            try:
                task = self._task_of(version)
                model_settings = (
                    await asyncio.to_thread(self.repository.overrides, version.name)
                ).applied_to(self.settings)
            except ModelLoadError as exc:
                self._failed[version.key] = exc.message
                raise
            charged = self._charges.get(version.key, 0)
            await self._make_room(version, max(version.model_file_bytes, charged), evict)
            self._loading.add(version.key)
            started = time.perf_counter()
            try:
                served = await asyncio.to_thread(
                    ServedModel.load,
                    version,
                    task,
                    self._session_options(model_settings),
                    self.providers,
                    verify=self.settings.runtime.verify_checksums,
                    warmup=self.settings.runtime.warmup,
                    small_options=self._small_session_options(model_settings),
                    small_run_tokens=self._small_run_tokens(model_settings),
                    length_buckets=self.settings.runtime.length_buckets,
                )
            except Exception as exc:
                reason = exc.message if isinstance(exc, EdgetuneError) else repr(exc)[:500]
                self._failed[version.key] = reason
                self.observer.model_loaded(version, time.perf_counter() - started, reason)
                raise
            finally:
                self._loading.discard(version.key)
            served.settings = model_settings
            self._failed.pop(version.key, None)
            self.observer.model_loaded(version, served.load_seconds)
            # A reload measures less when it reuses memory an eviction freed: the version is
            # charged the most it was ever measured at, so the budget means what it says.
            served.memory_bytes = max(served.memory_bytes, charged)
            self._charges[version.key] = served.memory_bytes
            self._loaded[version.key] = served
            await self._notify(version, loaded=True)
            try:
                # The estimate was the file size; the measured footprint may be larger.
                await self._make_room(version, 0, evict)
            except ResourceExhausted:
                await self._drop(served)
                raise
            return served

    def _session_options(self, model: ModelSettings) -> ort.SessionOptions:
        """The server's shared session options, or the model's own when it sets threads."""
        if (model.intra_op_threads, model.intra_op_spinning) == (
            self.settings.runtime.intra_op_threads,
            self.settings.runtime.intra_op_spinning,
        ):
            return self._options
        return self._session_options_for(model.intra_op_threads, model.intra_op_spinning)

    def _small_session_options(self, model: ModelSettings) -> ort.SessionOptions | None:
        """Options of the model's one-thread session (runs side by side, small runs alone),
        or None when it would not differ from the main one (one thread already, or not on
        CPU alone) or is turned off."""
        if not self.settings.runtime.small_run_tokens or self.providers != [CPU]:
            return None
        if self._session_options(model).intra_op_num_threads <= 1:
            return None
        return self._session_options_for(1, model.intra_op_spinning)

    def _small_run_tokens(self, model: ModelSettings) -> int:
        """Largest run alone that takes the one-thread session: none when the main session's
        threads spin (there is no sleeping thread to wake, and all cores answer sooner)."""
        return 0 if model.intra_op_spinning else self.settings.runtime.small_run_tokens

    def _session_options_for(self, threads: int, spinning: bool) -> ort.SessionOptions:
        return session_options(threads, spinning, self.settings.runtime.intra_op_spin_us)

    async def _make_room(self, version: ModelVersion, incoming: int, evict: bool = True) -> None:
        """Evict least recently used, unpinned versions other than `version` (none unless
        `evict`) until the loaded versions plus `incoming` bytes fit the budget.

        :raises ResourceExhausted: when evicting everything evictable is not enough.
        """
        if not self.budget_bytes:
            return
        candidates = sorted(
            (
                served
                for served in self._loaded.values()
                if evict and served.version.key != version.key and not self.pinned(served.version)
            ),
            key=lambda served: served.last_used,
        )
        while self.models_bytes + incoming > self.budget_bytes and candidates:
            evicted = candidates.pop(0)
            log.info(
                "evicting %s:%d (%.1f MiB, idle %.0fs) to fit %s:%d in the memory budget",
                evicted.version.name,
                evicted.version.version,
                evicted.memory_bytes / MIB,
                time.monotonic() - evicted.last_used,
                version.name,
                version.version,
            )
            await self._drop(evicted)
        if self.models_bytes + incoming > self.budget_bytes:
            others = self.models_bytes - (
                self._loaded[version.key].memory_bytes if version.key in self._loaded else 0
            )
            needed = incoming or self._loaded[version.key].memory_bytes
            raise ResourceExhausted(
                f"model {version.name!r} version {version.version} needs "
                f"{needed / MIB:.1f} MiB but the memory budget is "
                f"{self.budget_bytes / MIB:.0f} MiB (memory_budget_mb) and "
                f"{'pinned models' if evict else 'the models loaded before it'} hold "
                f"{others / MIB:.1f} MiB"
            )

    async def _drop(self, served: ServedModel) -> None:
        """Stop routing to a loaded version and forget it; running requests finish on it."""
        self._loaded.pop(served.version.key, None)
        for route in [r for r, s in self._routes.items() if s is served]:
            del self._routes[route]
        served.batcher = None  # its worker holds served.predict: no cycle keeps it alive
        await self._notify(served.version, loaded=False)
        await asyncio.to_thread(release_free_memory)

    def _task_of(self, version: ModelVersion) -> Task:
        try:
            return self.plugins.task(version.manifest.task)
        except NotFound as exc:
            raise ModelLoadError(
                f"model {version.name!r} version {version.version} cannot be served: {exc.message}"
            ) from None

    async def _notify(self, version: ModelVersion, *, loaded: bool) -> None:
        for listener in self.listeners:
            await listener(version, loaded)


def _published(version: ModelVersion) -> tuple[str, int]:
    """When a version was published: its manifest's time, then its folder's (finer)."""
    return version.manifest.created, version.path.stat().st_mtime_ns
