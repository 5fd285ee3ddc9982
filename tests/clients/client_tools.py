"""Real third-party clients run as child processes against the in-process server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_HINT = "run scripts/setup-clients.sh (CI does, through scripts/test.sh)"


def require(path: Path, what: str) -> Path:
    """Fail (never skip) when a client tool is missing."""
    if not path.exists():
        pytest.fail(f"{what} is missing at {path}: {SETUP_HINT}")
    return path


async def run(*command: str | Path, limit_s: float = 120) -> str:
    """Run a client without blocking the event loop the server runs on; its stdout."""
    process = await asyncio.create_subprocess_exec(
        *map(str, command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(limit_s):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"{command[0]} failed: {stderr.decode()}{stdout.decode()}"
    return stdout.decode()
