"""The plugin contract: every hook edgetune calls, typed and documented.

A plugin implements any subset of these with `@edgetune.hookimpl` and the same function
name; argument names must match (a plugin may take fewer arguments than the spec).
An implementation of a hook that is not listed here fails start-up, naming the plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from edgetune.auth import Authenticator
from edgetune.data import DatasetReader
from edgetune.plugins import hookspec
from edgetune.runner import JobRunner
from edgetune.task import Task


@hookspec
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the tasks this plugin provides.

    :param register: call it once per task with a `edgetune.task.Task` instance. The host
        owns the names: registering a task name that another plugin already registered
        fails start-up with a message naming both plugins.
    :return: nothing; every plugin's implementation is called.

    Example::

        @edgetune.hookimpl
        def edgetune_register_tasks(register):
            register(SentimentTask())
    """


@hookspec
def edgetune_register_dataset_readers(register: Callable[[DatasetReader], None]) -> None:
    """Register readers for data-set file formats.

    :param register: call it once per `edgetune.data.DatasetReader` instance. A format
        name registered twice fails start-up naming both plugins.
    :return: nothing; every plugin's implementation is called.

    Example::

        @edgetune.hookimpl
        def edgetune_register_dataset_readers(register):
            register(ParquetReader())
    """


@hookspec
def edgetune_register_authenticators(register: Callable[[Authenticator], None]) -> None:
    """Register ways to authenticate callers.

    :param register: call it once per `edgetune.auth.Authenticator` instance; the server
        uses the one whose `name` the `auth` setting gives. A name registered twice fails
        start-up naming both plugins.
    :return: nothing; every plugin's implementation is called.

    Example::

        @edgetune.hookimpl
        def edgetune_register_authenticators(register):
            register(OidcAuthenticator())
    """


@hookspec
def edgetune_register_job_runners(register: Callable[[JobRunner], None]) -> None:
    """Register places to run fine-tuning jobs' training processes.

    :param register: call it once per `edgetune.runner.JobRunner` instance; the server uses
        the one whose `name` the `job_runner` setting gives ("local", built in, by default;
        "ray", built in, with the `ray` extra). A name registered twice fails start-up
        naming both plugins.
    :return: nothing; every plugin's implementation is called.

    Example::

        @edgetune.hookimpl
        def edgetune_register_job_runners(register):
            register(SlurmRunner())
    """
