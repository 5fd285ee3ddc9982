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


def test_servicers_only_translate_and_call_services() -> None:
    """A servicer turns protobuf into a service call and the answer back into protobuf,
    nothing else (the Seldon MLServer shape): the logic lives behind transport-free
    services, so it is tested without gRPC and shared by every protocol.

    So a servicer module may import: the standard library; grpc and the generated
    protobuf modules (edgetune.v1.*, edgetune.kserve.*); the converters beside it
    (edgetune.server.convert, edgetune.server.convert_*) and the status table
    (edgetune.server.status, which ClassifyStream uses to put an error in a message);
    the services (edgetune.serving.service, edgetune.serving.admin,
    edgetune.training.service); edgetune.errors (the neutral errors a stream reports);
    and the `edgetune` package itself, for its version string. Not the registry, the model
    repository, the job manager, the job store, the data-set and base stores, settings or
    plugins: what a servicer needs from those, a service gives it.
    """
    allowed_exact = {
        "edgetune",
        "edgetune.errors",
        "edgetune.server.convert",
        "edgetune.server.status",
        "edgetune.serving.service",
        "edgetune.serving.admin",
        "edgetune.training.service",
    }
    allowed_prefixes = ("edgetune.v1.", "edgetune.kserve.", "edgetune.server.convert_")
    servicers = [
        PACKAGE / "server" / name for name in ("servicers.py", "finetuning.py", "kserve.py")
    ]
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in servicers
        for name in imported_modules(path)
        if (name == "edgetune" or name.startswith("edgetune."))
        and name not in allowed_exact
        and not name.startswith(allowed_prefixes)
        and name not in ("edgetune.v1", "edgetune.kserve", "edgetune.server")
    ]
    assert not offenders, offenders
    # `from edgetune.server import convert_v2` names the package; check the names it takes.
    for path in servicers:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "edgetune.server":
                for alias in node.names:
                    assert alias.name == "status" or alias.name.startswith("convert"), (
                        f"{path.name} imports edgetune.server.{alias.name}"
                    )
