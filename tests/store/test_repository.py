"""The model repository: versions, aliases, atomic publish, manifests and checksums."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgetune.errors import InvalidArgument, ModelLoadError, NotFound
from edgetune.store import Manifest, ModelRepository


def stage(repo: ModelRepository, name: str, content: bytes = b"onnx") -> int:
    with repo.staging() as folder:
        (folder / "model.onnx").write_bytes(content)
        (folder / "tokenizer.json").write_text("{}")
        return repo.publish(name, folder, Manifest(task="t", labels=["a", "b"])).version


def test_publish_numbers_versions_and_moves_latest(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "models")
    assert repo.model_names() == []
    assert [stage(repo, "m"), stage(repo, "m"), stage(repo, "other")] == [1, 2, 1]
    assert repo.model_names() == ["m", "other"]
    assert repo.versions("m") == [1, 2]
    assert repo.aliases("m") == {"latest": 2}
    assert repo.resolve("m").version == 2
    assert repo.resolve("m", "1").version == 1
    assert not any((tmp_path / "models" / ".staging").iterdir())  # staging cleaned up


def test_manifest_records_sha256_of_every_file(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stage(repo, "m", b"weights")
    version = repo.resolve("m")
    assert set(version.manifest.files) == {"model.onnx", "tokenizer.json"}
    assert version.manifest.files["model.onnx"] == hashlib.sha256(b"weights").hexdigest()
    version.manifest.verify_files(version.path)
    (version.path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match=r"model\.onnx does not match its sha256"):
        version.manifest.verify_files(version.path)
    (version.path / "model.onnx").write_bytes(b"weights")
    (version.path / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        version.manifest.verify_files(version.path)


def test_manifest_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    manifest = Manifest(task="t", labels=["a"], files={"model.onnx": "0", "../x": "0"})
    (tmp_path / "v").mkdir()
    with pytest.raises(ModelLoadError, match="points outside the folder"):
        manifest.verify_files(tmp_path / "v")


def test_bad_manifest_names_the_field(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stage(repo, "m")
    path = tmp_path / "m" / "1" / "manifest.json"
    data = json.loads(path.read_text())
    data["labels"] = []
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="field 'labels'"):
        repo.resolve("m")


def test_aliases_are_replaced_atomically_and_validated(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    stage(repo, "m")
    stage(repo, "m")
    repo.set_alias("m", "production", 1)
    assert repo.resolve("m", "production").version == 1
    repo.set_alias("m", "production", 2)
    assert repo.aliases("m") == {"latest": 2, "production": 2}
    assert [p.name for p in (tmp_path / "m" / "aliases").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(NotFound, match="no version 9"):
        repo.set_alias("m", "production", 9)
    with pytest.raises(InvalidArgument, match="cannot be a number"):
        repo.set_alias("m", "3", 1)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".hidden", "", "x" * 200, "a..b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(InvalidArgument, match="is not valid"):
        repo.resolve(name)


def test_not_found_messages(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(NotFound, match="model 'm' not found"):
        repo.resolve("m")
    stage(repo, "m")
    with pytest.raises(NotFound, match="model 'm' has no version 2"):
        repo.resolve("m", "2")
    with pytest.raises(NotFound, match="model 'm' has no alias 'prod'"):
        repo.resolve("m", "prod")


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _: stage(repo, "m"), range(16)))
    assert sorted(versions) == list(range(1, 17))
    assert repo.aliases("m")["latest"] in versions


def test_failed_staging_leaves_nothing_behind(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)

    def failing_export() -> None:
        with repo.staging() as folder:
            (folder / "model.onnx").write_bytes(b"half")
            raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        failing_export()
    assert repo.model_names() == []
    assert not any((tmp_path / ".staging").iterdir())
