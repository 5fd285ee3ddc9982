"""The layers stay apart: which modules may import what (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "edgetune"


def imported_modules(path: Path) -> set[str]:
    """Every module path.py imports, at any depth of the file (lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_under(*folders: str) -> list[Path]:
    return [path for folder in folders for path in sorted((PACKAGE / folder).rglob("*.py"))]


def test_the_domain_layers_never_import_grpc() -> None:
    """Errors carry a neutral code; only the transport (server/, the clients) speaks gRPC."""
    domain = [PACKAGE / "errors.py", PACKAGE / "task.py", PACKAGE / "settings.py"]
    domain += modules_under("serving", "training", "store", "exporters")
    assert len(domain) > 20
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in domain
        for name in imported_modules(path)
        if name == "grpc" or name.startswith(("grpc.", "edgetune.server", "edgetune.v1"))
    ]
    assert not offenders, offenders


def test_every_error_code_maps_to_a_grpc_status() -> None:
    from edgetune.errors import Code
    from edgetune.server.status import GRPC_CODES

    assert set(GRPC_CODES) == set(Code)
    assert all(GRPC_CODES[code].name == code.name for code in Code)
