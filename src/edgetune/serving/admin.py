"""The transport-free model administration service: list, describe, load, unload, import
and promote model versions, and what the server reports about itself.

The servicers (edgetune.v1.Models and Server, KServe v2 metadata and readiness) only
translate protobuf and call this; it checks the request, calls the registry and the model
repository, and runs their disk reads in a thread so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

import edgetune
from edgetune.errors import EdgetuneError, InvalidArgument, NotFound, quoted
from edgetune.extras import capabilities, require_train
from edgetune.plugins.manager import Plugins
from edgetune.serving.memory import resident_bytes
from edgetune.serving.model import ServedModel
from edgetune.serving.registry import ModelRegistry, ModelStatus
from edgetune.settings import Settings
from edgetune.store import ModelVersion, Repository
from edgetune.store.repository import check_name
from edgetune.task import Task
from edgetune.training.bases import check_base_name
from edgetune.training.jobs import settings_env

log = logging.getLogger(__name__)
_VERSION_NUMBER = re.compile(r"[0-9]{1,18}")
"""A version number as SetAlias takes it: ASCII digits that fit an int64."""


@dataclass(slots=True)
class ServerState:
    """What readiness reports: ready once start-up loading is done (`starting` false)
    and until shutdown begins (`draining`)."""

    starting: bool = True
    draining: bool = False

    @property
    def ready(self) -> bool:
        """Whether the server reports ready."""
        return not self.starting and not self.draining


@dataclass(frozen=True, slots=True)
class ModelDetails:
    """One version as the registry sees it; `task` is None when no plugin serves it."""

    version: ModelVersion
    task: Task | None
    served: ServedModel | None
    aliases: list[str]
    pinned: bool
    status: tuple[ModelStatus, str]


@dataclass(frozen=True, slots=True)
class ServerReport:
    """What GetServerInfo answers, read at the time of the call."""

    version: str
    plugins: Plugins
    providers: list[str]
    settings: Settings
    onnxruntime_version: str
    resident_bytes: int
    models_bytes: int
    budget_bytes: int
    ready: bool
    capabilities: list[str]


class ModelAdmin:
    """Model administration over one registry and its repository."""

    def __init__(
        self,
        repository: Repository,
        registry: ModelRegistry,
        settings: Settings,
        state: ServerState,
    ) -> None:
        self.repository = repository
        self.registry = registry
        self.settings = settings
        self.state = state
        self._imports = asyncio.Lock()

    def task_of(self, version: ModelVersion) -> Task | None:
        """The task that serves a version, None when no loaded plugin does."""
        return self.registry.plugins.tasks.get(version.manifest.task)

    async def details(self, version: ModelVersion) -> ModelDetails:
        """A version's aliases (read from disk, in a thread), state and memory."""
        aliases = await asyncio.to_thread(self.repository.aliases, version.name)
        return self._details(version, aliases)

    def _details(self, version: ModelVersion, aliases: dict[str, int]) -> ModelDetails:
        return ModelDetails(
            version,
            self.task_of(version),
            self.registry.loaded.get(version.key),
            [alias for alias, number in aliases.items() if number == version.version],
            self.registry.pinned(version),
            self.registry.status(version),
        )

    async def list_models(self) -> list[tuple[str, list[ModelDetails]]]:
        """Every model in the repository with each of its versions, by name."""
        found = await asyncio.to_thread(self._read_repository)
        return [
            (name, [self._details(version, aliases) for version in versions])
            for name, versions, aliases in found
        ]

    def _read_repository(self) -> list[tuple[str, list[ModelVersion], dict[str, int]]]:
        """Each model's versions and aliases, read from disk in one go (in a thread)."""
        return [
            (
                name,
                # describe: a bucket's versions are listed, not downloaded.
                [self.repository.describe(name, n) for n in self.repository.versions(name)],
                self.repository.aliases(name),
            )
            for name in self.repository.model_names()
        ]

    async def get(self, name: str, version: str) -> ModelDetails:
        """The version a request for (name, version) runs on now."""
        _require_name(name)
        return await self.details(await asyncio.to_thread(self.registry.routed, name, version))

    async def load(self, name: str, version: str) -> ModelDetails:
        """Load and warm up a version."""
        _require_name(name)
        return await self.details((await self.registry.load(name, version)).version)

    async def unload(self, name: str, version: str) -> ModelVersion:
        """Unload a version; the one unloaded."""
        _require_name(name)
        return await self.registry.unload(name, version)

    async def set_alias(self, name: str, alias: str, version: str) -> ModelDetails:
        """Load and warm a version, then point the alias at it."""
        _require_name(name)
        if not alias:
            raise InvalidArgument("alias is required")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not _VERSION_NUMBER.fullmatch(version):
            raise InvalidArgument(f"version {quoted(version)} must be a version number")
        served = await self.registry.promote(name, int(version), alias)
        return await self.details(served.version)

    async def import_model(
        self,
        name: str,
        task: str,
        base: str,
        labels: list[str],
        max_length: int,
        descriptions: dict[str, str] | None = None,
    ) -> ModelDetails:
        """Build, export and publish a model from an uploaded base, in a child process (so
        torch never loads in the server).

        :param descriptions: label -> what it means (the child's --labels-file); every key
            must be one of labels, which sets the order (labels may be empty: then the keys
            in the order received).
        """
        require_train("import-model")
        _require_name(name)
        if not task:
            raise InvalidArgument("task is required")
        self.registry.plugins.task(task)  # NOT_FOUND naming the known tasks
        if not base:
            raise InvalidArgument("base is required: the name of an uploaded base")
        folder = self.settings.bases_dir / check_base_name(base, "base")
        if not await asyncio.to_thread(folder.is_dir):
            raise NotFound(f"base {base!r} not found: upload it with UploadBase")
        check_name(name)
        command = [
            sys.executable, "-m", "edgetune", "import-model", "--name", name,
            "--task", task, str(folder),
        ]  # fmt: skip
        if max_length:
            command += ["--max-length", str(max_length)]
        with tempfile.TemporaryDirectory(prefix="edgetune-import-") as scratch:
            if descriptions:
                unknown = [label for label in descriptions if labels and label not in labels]
                if unknown:
                    raise InvalidArgument(
                        f"label_descriptions: {quoted(unknown[0])} is not one of the labels"
                    )
                # A file rather than arguments: descriptions are free text of any characters
                # (commas included), and JSON keeps the labels' order.
                listed = labels or list(descriptions)
                labels_file = Path(scratch) / "labels.json"
                labels_file.write_text(
                    json.dumps({label: descriptions.get(label, "") for label in listed})
                )
                command += ["--labels-file", str(labels_file)]
            elif labels:
                command += ["--labels", ",".join(labels)]
            async with self._imports:  # one export at a time: each takes the CPU for a while
                process = await asyncio.create_subprocess_exec(
                    *command,
                    env=settings_env(self.settings),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    stdin=asyncio.subprocess.DEVNULL,
                )
                _, stderr = await process.communicate()
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            reason = next((line for line in reversed(lines) if line.startswith("error: ")), "")
            if reason and process.returncode == 2:  # the command's own, bounded message
                raise InvalidArgument(reason.removeprefix("error: "))
            log.error("import-model failed (%d): %s", process.returncode, "\n".join(lines[-20:]))
            raise EdgetuneError("the import failed; the server's log has the details")
        return await self.details(await asyncio.to_thread(self.repository.resolve, name, ""))

    async def metadata(
        self, name: str, version: str
    ) -> tuple[ModelVersion, Task | None, list[int]]:
        """A version (resolved in the repository), its task and every version of its model."""
        resolved = await asyncio.to_thread(self.repository.resolve, name, version)
        numbers = await asyncio.to_thread(self.repository.versions, resolved.name)
        return resolved, self.task_of(resolved), numbers

    async def ready(self, name: str, version: str) -> bool:
        """Whether a request would be answered without a load; false for an unknown model."""
        return await asyncio.to_thread(self.registry.ready, name, version)

    def server_report(self) -> ServerReport:
        """Version, plugins, providers, memory, readiness and capabilities now."""
        return ServerReport(
            version=edgetune.__version__,
            plugins=self.registry.plugins,
            providers=self.registry.providers,
            settings=self.settings,
            onnxruntime_version=ort.__version__,
            resident_bytes=resident_bytes(),
            models_bytes=self.registry.models_bytes,
            budget_bytes=self.registry.budget_bytes,
            ready=self.state.ready,
            capabilities=capabilities(),
        )


def _require_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name is required")
