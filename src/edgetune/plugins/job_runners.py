"""Built-in job runners: "local" (a child process of the server, the default) and "ray"
(a job on a Ray cluster, `EDGETUNE_JOB_RUNNER=ray`; the `ray` extra). Registering "ray"
imports nothing of Ray: it is imported only when the settings pick it."""

from __future__ import annotations

from collections.abc import Callable

from edgetune.plugins import hookimpl
from edgetune.runner import JobRunner
from edgetune.training.ray_runner import RayRunner
from edgetune.training.runners import LocalRunner


@hookimpl
def edgetune_register_job_runners(register: Callable[[JobRunner], None]) -> None:
    """The local and the Ray runner."""
    register(LocalRunner())
    register(RayRunner())
