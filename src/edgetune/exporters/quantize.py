"""Dynamic int8 quantization with Optimum, configured for the CPU it runs on."""

from __future__ import annotations

import platform
import shutil
from functools import cache
from pathlib import Path

from edgetune.errors import FailedPrecondition


@cache
def cpu_target() -> str:
    """The best Optimum int8 configuration this CPU supports: avx512_vnni, avx512, avx2
    or arm64. Raises FailedPrecondition on a CPU without any of them."""
    if platform.machine().lower() in {"aarch64", "arm64"}:
        return "arm64"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for flag, target in (("avx512_vnni", "avx512_vnni"), ("avx512f", "avx512"), ("avx2", "avx2")):
        if flag in flags:
            return target
    raise FailedPrecondition("this CPU has none of avx512_vnni, avx512, avx2 or arm64 for int8")


def quantize_dynamic(folder: Path, source: str, target: str) -> str:
    """Quantize folder/source to folder/target (dynamic int8 weights, per tensor).

    :return: the CPU configuration used.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    cpu = cpu_target()
    config = getattr(AutoQuantizationConfig, cpu)(is_static=False, per_channel=False)
    quantizer = ORTQuantizer.from_pretrained(folder, file_name=source)
    out = folder / "quantizer-output"
    written = quantizer.quantize(quantization_config=config, save_dir=out)
    produced = next(Path(written).glob("*.onnx"))
    shutil.move(produced, folder / target)
    shutil.rmtree(out, ignore_errors=True)
    return cpu
