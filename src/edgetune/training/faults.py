"""Test-only fault injection in the training process, inert unless `EDGETUNE_TEST_FAULT` is set.

The fault tests (tests/faults/) need a training process to stop at an exact point of
export and publish, or to run out of space while it publishes, without privileges (no
tmpfs, no loop device). The variable, passed from the server's environment to its training
processes, holds `ACTION@POINT`:

- `pause@POINT`: at POINT, write the job event "test fault: paused at POINT" and wait
  (until the process is killed or the job cancelled), so a test can kill -9 the server at
  that moment;
- `hold=PATH@POINT`: at POINT, write the job event "test fault: held at POINT" and wait
  until the file PATH exists (or the job is cancelled), then go on, so a test can restart
  the server while the job is at POINT and let it finish after;
- `fsize=BYTES@POINT`: for the step named POINT, no file the process writes may grow past
  BYTES (`RLIMIT_FSIZE`; writes fail with EFBIG as they would with ENOSPC on a full disk).

Points: `epoch` (the job's main run, not a search trial, recorded an epoch's checkpoint
and its validation event; at every epoch), `trial` (a search trial finished and is recorded
in its study), `export` (the ONNX files are in the staging folder, nothing published),
`publish` (the version is assembled in staging, just before it is renamed into place),
`published` (the version is in the repository, the job has not recorded it yet). `fsize`
applies to `publish`: export, quantization and publication together.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetune.training.loop import Cancelled

log = logging.getLogger(__name__)

FAULT_ENV = "EDGETUNE_TEST_FAULT"
POINTS = ("epoch", "trial", "export", "publish", "published")


class Faults:
    """The fault (if any) a training process was asked to inject, and where."""

    def __init__(
        self,
        spec: str,
        report: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> None:
        """:param spec: `ACTION@POINT`, or "" for no fault.
        :param report: writes a job event.
        :param cancelled: whether the job was cancelled (a pause ends then)."""
        action, _, point = spec.rpartition("@")
        valid = (
            action == "pause"
            or (action.startswith("fsize=") and action[6:].isdigit())
            or (action.startswith("hold=") and len(action) > 5)
        )
        if spec and (point not in POINTS or not valid):
            raise ValueError(
                f"{FAULT_ENV}={spec!r}: expected pause@POINT, hold=PATH@POINT or fsize=BYTES@POINT"
            )
        self.action, self.point = action, point
        self.report, self.cancelled = report, cancelled

    @classmethod
    def from_env(cls, report: Callable[[str], None], cancelled: Callable[[], bool]) -> Faults:
        """The fault EDGETUNE_TEST_FAULT names; none when it is unset."""
        return cls(os.environ.get(FAULT_ENV, ""), report, cancelled)

    def pause(self, point: str) -> None:
        """Wait here for good when asked to pause at point, or until the release file
        exists when asked to hold there (a cancel still stops the job)."""
        if self.point != point or not self.action.startswith(("pause", "hold=")):
            return
        release = Path(self.action.removeprefix("hold=")) if self.action != "pause" else None
        if release is not None and release.exists():
            return  # released: the point passed again (the next epoch) goes on quietly
        log.warning("%s: %s at %s", FAULT_ENV, self.action, point)
        self.report(f"test fault: {'paused' if release is None else 'held'} at {point}")
        while not self.cancelled():
            if release is not None and release.exists():
                return
            time.sleep(0.1)
        raise Cancelled

    @contextmanager
    def file_size_limit(self, point: str) -> Iterator[None]:
        """Within the block, limit written files to the asked size when asked for point."""
        if not self.action.startswith("fsize=") or self.point != point:
            yield
            return
        before = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = int(self.action.removeprefix("fsize="))
        log.warning("%s: files are limited to %d bytes during %s", FAULT_ENV, limit, point)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, before[1]))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, before)


NO_FAULTS = Faults("", lambda message: None, lambda: False)
