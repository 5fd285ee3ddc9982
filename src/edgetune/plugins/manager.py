"""The one factory that builds edgetune's PluginManager and the task registry.

Order: hookspecs -> built-in plugins -> entry points of installed distributions (unless
autoload is off) -> modules named with --plugin -> `check_pending()`, so a misspelt hook
or a plugin that fails to import stops start-up with a message naming the plugin.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from edgetune.auth import Authenticator
from edgetune.data import DatasetReader
from edgetune.errors import InvalidArgument, NotFound, PluginError, quoted
from edgetune.plugins import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs
from edgetune.runner import JobRunner
from edgetune.task import Task

log = logging.getLogger(__name__)

BUILTIN_PLUGINS = (
    "edgetune.plugins.text_classification",
    "edgetune.plugins.multi_label",
    "edgetune.plugins.token_classification",
    "edgetune.plugins.image_classification",
    "edgetune.plugins.sentence_classification",
    "edgetune.plugins.readers",
    "edgetune.plugins.token_auth",
    "edgetune.plugins.job_runners",
)
"""Modules of the built-in plugins, registered through the same hooks as third-party ones."""

BUILTIN, ENTRY_POINT, MODULE = "builtin", "entry-point", "module"


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """A registered plugin and where it came from."""

    name: str
    origin: str
    module: str
    distribution: str = ""
    distribution_version: str = ""

    def describe(self) -> str:
        """Human-readable origin, e.g. "entry point of acme-tasks 1.2"."""
        if self.origin == ENTRY_POINT:
            return f"entry point of {self.distribution} {self.distribution_version}"
        if self.origin == MODULE:
            return f"--plugin {self.module}"
        return "built-in"


@dataclass(slots=True)
class Plugins:
    """The plugin manager plus what the host collected from it."""

    manager: pluggy.PluginManager
    infos: list[PluginInfo] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    task_plugins: dict[str, str] = field(default_factory=dict)
    readers: dict[str, DatasetReader] = field(default_factory=dict)
    reader_plugins: dict[str, str] = field(default_factory=dict)
    authenticators: dict[str, Authenticator] = field(default_factory=dict)
    authenticator_plugins: dict[str, str] = field(default_factory=dict)
    runners: dict[str, JobRunner] = field(default_factory=dict)
    runner_plugins: dict[str, str] = field(default_factory=dict)

    def runner(self, name: str) -> JobRunner:
        """The job runner registered under name (the `job_runner` setting)."""
        try:
            return self.runners[name]
        except KeyError:
            known = ", ".join(sorted(self.runners)) or "none"
            raise InvalidArgument(
                f"setting EDGETUNE_JOB_RUNNER: no job runner named {name!r} (known: {known})"
            ) from None

    def authenticator(self, name: str) -> Authenticator:
        """The authenticator registered under name (the `auth` setting)."""
        try:
            return self.authenticators[name]
        except KeyError:
            known = ", ".join(sorted(self.authenticators)) or "none"
            raise InvalidArgument(
                f"auth: no authenticator named {name!r} (known: {known})"
            ) from None

    def task(self, name: str) -> Task:
        """The task registered under name; NotFound lists the known ones."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise NotFound(
                f"task {quoted(name)} is not registered (known tasks: {known})"
            ) from None

    def reader(self, format_name: str = "", filename: str = "") -> DatasetReader:
        """The reader for a format name, or for a file name's suffix when no name is given."""
        if format_name:
            if format_name in self.readers:
                return self.readers[format_name]
            known = ", ".join(sorted(self.readers)) or "none"
            raise InvalidArgument(f"format {quoted(format_name)} has no reader (known: {known})")
        suffix = Path(filename).suffix.lower()
        for reader in self.readers.values():
            if suffix and suffix in reader.suffixes:
                return reader
        raise InvalidArgument(
            f"cannot tell the format of {filename!r}: give a format "
            f"({', '.join(sorted(self.readers))})"
        )


def build_plugins(
    modules: Sequence[str] = (), *, autoload: bool = True, builtins: Iterable[str] = BUILTIN_PLUGINS
) -> Plugins:
    """Build the PluginManager, load every plugin and collect the tasks they register.

    :param modules: import paths of extra plugin modules (`--plugin`).
    :param autoload: load plugins from the `edgetune` entry-point group.
    :param builtins: built-in plugin modules; tests may pass fewer.
    :raises PluginError: a plugin failed to import, implements an unknown hook, has a
        wrong hook signature, or registers a task name another plugin already has.
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    for module_name in builtins:
        _register(
            plugins,
            _import(module_name, f"built-in plugin {module_name}"),
            PluginInfo(module_name, BUILTIN, module_name),
        )
    if autoload:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "unknown distribution"
            version = ep.dist.version if ep.dist else ""
            info = PluginInfo(ep.name, ENTRY_POINT, ep.value, dist, version)
            _register(plugins, _load_entry_point(ep, info), info)
    for module_name in modules:
        _register(
            plugins,
            _import(module_name, f"plugin module {module_name!r}"),
            PluginInfo(module_name, MODULE, module_name),
        )
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin)
        raise PluginError(f"plugin {_describe(plugins, name)}: {exc}") from None
    _collect(plugins, "edgetune_register_tasks", Task, "name", plugins.tasks, plugins.task_plugins)
    _collect(
        plugins,
        "edgetune_register_dataset_readers",
        DatasetReader,
        "format",
        plugins.readers,
        plugins.reader_plugins,
    )
    _collect(
        plugins,
        "edgetune_register_authenticators",
        Authenticator,
        "name",
        plugins.authenticators,
        plugins.authenticator_plugins,
    )
    _collect(
        plugins,
        "edgetune_register_job_runners",
        JobRunner,
        "name",
        plugins.runners,
        plugins.runner_plugins,
    )
    return plugins


def _import(module_name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{what} failed to import: {type(exc).__name__}: {exc}") from exc


def _load_entry_point(ep: metadata.EntryPoint, info: PluginInfo) -> object:
    try:
        loaded: object = ep.load()
        return loaded
    except Exception as exc:
        raise PluginError(
            f"plugin {info.name!r} ({info.describe()}) failed to import: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _register(plugins: Plugins, plugin: object, info: PluginInfo) -> None:
    if plugins.manager.is_registered(plugin):
        log.debug("plugin %s is already registered; skipping %s", info.module, info.describe())
        return
    if plugins.manager.has_plugin(info.name):
        raise PluginError(f"two plugins are named {info.name!r}; the second is {info.describe()}")
    try:
        plugins.manager.register(plugin, name=info.name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {info.name!r} ({info.describe()}): {exc}") from None
    plugins.infos.append(info)


def _describe(plugins: Plugins, name: str | None) -> str:
    for info in plugins.infos:
        if info.name == name:
            return f"{name!r} ({info.describe()})"
    return repr(name)


def _collect(
    plugins: Plugins,
    hook_name: str,
    kind: type[Any],
    key: str,
    registry: dict[str, Any],
    owners: dict[str, str],
) -> None:
    """Call a registration hook through pluggy, one plugin at a time (in registration
    order) with a `register` callback that knows which plugin is registering, so a clash
    names both plugins. A subset hook caller per plugin keeps pluggy's own calling (its
    argument matching, wrappers and ordering marks) while telling the owners apart."""
    noun = kind.__name__
    manager = plugins.manager
    implementations = getattr(manager.hook, hook_name).get_hookimpls()
    for impl in implementations:
        owner = impl.plugin_name

        def register(item: Any, owner: str = owner) -> None:
            if not isinstance(item, kind):
                raise PluginError(
                    f"plugin {_describe(plugins, owner)} registered {item!r}, which is not a {noun}"
                )
            name = getattr(item, key)
            if name in registry:
                raise PluginError(
                    f"{noun} {name!r} is registered twice: by "
                    f"{_describe(plugins, owners[name])} and by {_describe(plugins, owner)}"
                )
            registry[name] = item
            owners[name] = owner

        others = [other.plugin for other in implementations if other.plugin is not impl.plugin]
        manager.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
