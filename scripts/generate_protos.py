"""Generate the Python protobuf and gRPC modules from proto/ into src/ (or another folder).

The import path mirrors the proto path (proto/edgetune/v1/x.proto -> edgetune.v1.x_pb2),
so the generated imports need no patching. Run after editing a .proto:

    .venv/bin/python scripts/generate_protos.py
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[Path]:
    """Every .proto that edgetune owns, in a stable order."""
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    # protoc resolves the relative proto paths against the include path.
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    """Parse the command line and generate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="output root")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
