"""ONNX Runtime session options and execution providers, chosen rather than defaulted."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import onnxruntime as ort

from edgetune.errors import InvalidArgument

CPU = "CPUExecutionProvider"
# Used automatically, best first, when this onnxruntime build and machine have them.
AUTO_PROVIDERS = ("CUDAExecutionProvider", CPU)


@cache
def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's FPU)."""
    allowed = os.sched_getaffinity(0)
    cores = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def choose_providers(requested: list[str]) -> list[str]:
    """The execution providers new sessions use, best first.

    An explicitly requested provider that this onnxruntime build lacks is an error,
    not a silent fall-back to CPU.
    """
    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise InvalidArgument(
                f"execution_providers: {', '.join(missing)} not available in this onnxruntime "
                f"build (available: {', '.join(available)})"
            )
        return requested
    return [p for p in AUTO_PROVIDERS if p in available]


SPIN_US = 100
"""How long an idle ONNX Runtime thread spins for new work before it sleeps (microseconds)."""


def session_options(
    intra_op_threads: int, spinning: bool = True, spin_us: int = SPIN_US
) -> ort.SessionOptions:
    """Options for every serving session: all graph optimisations, threads per core.

    :param spinning: let ONNX Runtime's threads spin for work instead of sleeping at once.
        Without it every parallel section of a run wakes sleeping threads: MiniLM int8 at
        batch 1 in a call loop took 2.0-2.4 ms a call against 1.3 ms with it, and a
        128-token article 9.8-11.0 against 9.2-9.5 ms (see RuntimeSettings.intra_op_spinning
        for when it costs more than it saves).
    :param spin_us: how long a thread spins before it sleeps; 0 = ONNX Runtime's own,
        much longer spin. 100 us kept the whole in-process gain and cut the CPU the
        threads burn between calls (1.4 against 1.7 cores in a loop with 0.5 ms gaps).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads or physical_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning and spin_us:
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    return options
