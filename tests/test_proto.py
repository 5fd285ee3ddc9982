"""The committed generated code is exactly what scripts/generate_protos.py produces."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "src"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generator = runpy.run_path(str(ROOT / "scripts" / "generate_protos.py"))
    generator["generate"](tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "the generator wrote nothing"
    stale = [
        str(path)
        for path, content in fresh.items()
        if not (GENERATED / path).is_file() or (GENERATED / path).read_bytes() != content
    ]
    assert not stale, f"regenerate with scripts/generate_protos.py: {stale} differ"
    committed = {
        p.relative_to(GENERATED)
        for p in (GENERATED / "edgetune").rglob("*_pb2*")
        if p.suffix in {".py", ".pyi"}
    }
    assert committed == set(fresh), "generated files without a .proto (or the reverse)"


def test_every_message_and_field_is_documented(tmp_path: Path) -> None:
    """Comments in the .proto are what Go and Java developers read."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    for proto in sorted((ROOT / "proto").rglob("*.proto")):
        out = tmp_path / "descriptor.pb"
        rel = proto.relative_to(ROOT / "proto")
        assert (
            protoc.main(
                [
                    "protoc",
                    f"-I{ROOT / 'proto'}",
                    "--include_source_info",
                    f"--descriptor_set_out={out}",
                    str(rel),
                ]
            )
            == 0
        )
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
        (file,) = files.file
        documented = {
            tuple(loc.path)
            for loc in file.source_code_info.location
            if loc.leading_comments.strip() or loc.trailing_comments.strip()
        }
        missing = []
        for m, message in enumerate(file.message_type):
            for f, field in enumerate(message.field):
                if (4, m, 2, f) not in documented:
                    missing.append(f"{message.name}.{field.name}")
        for s, service in enumerate(file.service):
            if (6, s) not in documented:
                missing.append(service.name)
            for r, method in enumerate(service.method):
                if (6, s, 2, r) not in documented:
                    missing.append(f"{service.name}.{method.name}")
        for e, enum in enumerate(file.enum_type):
            for v, value in enumerate(enum.value):
                if (5, e, 2, v) not in documented:
                    missing.append(f"{enum.name}.{value.name}")
        assert not missing, f"{rel}: undocumented: {missing}"


def test_protos_generate_java_and_csharp(tmp_path: Path) -> None:
    """The options for other languages hold: protoc's own Java and C# generators accept
    every file, and Java gets one class per message in io.edgetune.*. (Debian's protoc, which
    scripts/setup-clients.sh installs for the C++ example; grpc_tools' protoc has no Java.)"""
    import shutil
    import subprocess

    protoc = shutil.which("protoc")
    assert protoc, "protoc is missing: run scripts/setup-clients.sh"
    protos = [str(p.relative_to(ROOT / "proto")) for p in sorted((ROOT / "proto").rglob("*.proto"))]
    for language in ("java", "csharp"):
        out = tmp_path / language
        out.mkdir()
        subprocess.run(
            [protoc, f"-I{ROOT / 'proto'}", f"--{language}_out={out}", *protos],
            check=True,
            capture_output=True,
        )
    java = {p.name for p in (tmp_path / "java" / "io" / "edgetune" / "v1").iterdir()}
    assert {"ClassifyRequest.java", "JobState.java", "FineTuningProto.java"} <= java
    assert (tmp_path / "java" / "io" / "edgetune" / "kserve" / "ModelInferRequest.java").is_file()
    assert {p.name for p in (tmp_path / "csharp").iterdir()} >= {"Inference.cs", "GrpcPredictV2.cs"}
