"""The `edgetune` command line: `main` runs it (see `edgetune.cli.main`)."""

from edgetune.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
