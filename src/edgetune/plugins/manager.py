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
from types import ModuleType

import pluggy

from edgetune.errors import NotFound, PluginError
from edgetune.plugins import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs
from edgetune.task import Task

log = logging.getLogger(__name__)

BUILTIN_PLUGINS = ("edgetune.plugins.text_classification",)
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

    def task(self, name: str) -> Task:
        """The task registered under name; NotFound lists the known ones."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise NotFound(f"task {name!r} is not registered (known tasks: {known})") from None


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
    _collect_tasks(plugins)
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


def _collect_tasks(plugins: Plugins) -> None:
    """Call every edgetune_register_tasks implementation with a register callback that
    knows which plugin is registering, so clashes name both plugins."""
    hook = plugins.manager.hook.edgetune_register_tasks
    for impl in hook.get_hookimpls():
        owner = impl.plugin_name

        def register(task: Task, owner: str = owner) -> None:
            if not isinstance(task, Task):
                raise PluginError(
                    f"plugin {_describe(plugins, owner)} registered {task!r}, which is not a Task"
                )
            if task.name in plugins.tasks:
                first = _describe(plugins, plugins.task_plugins[task.name])
                raise PluginError(
                    f"task {task.name!r} is registered twice: by {first}"
                    f" and by {_describe(plugins, owner)}"
                )
            plugins.tasks[task.name] = task
            plugins.task_plugins[task.name] = owner

        kwargs = {"register": register}
        impl.function(*(kwargs[arg] for arg in impl.argnames))
