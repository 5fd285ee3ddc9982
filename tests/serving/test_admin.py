"""Model administration without gRPC (serving/admin.py): the checks, the registry's view
of each version, metadata, readiness and the server report."""

from __future__ import annotations

import pytest

from edgetune.errors import FailedPrecondition, InvalidArgument, NotFound
from edgetune.plugins.manager import Plugins
from edgetune.serving.admin import ModelAdmin, ServerState
from edgetune.serving.registry import ModelRegistry, ModelStatus
from edgetune.settings import Settings
from edgetune.store import ModelRepository


@pytest.fixture
def admin(repository: ModelRepository, plugins: Plugins, settings: Settings) -> ModelAdmin:
    registry = ModelRegistry(repository, plugins, settings)
    return ModelAdmin(repository, registry, settings, ServerState())


async def test_versions_are_described_as_the_registry_sees_them(admin: ModelAdmin) -> None:
    [(name, [available])] = await admin.list_models()
    assert (name, available.version.version, available.aliases) == ("tiny", 1, ["latest"])
    assert available.status == (ModelStatus.AVAILABLE, "")
    assert available.served is None and not available.pinned
    assert available.task is not None and available.task.name == "text-classification"
    assert not await admin.ready("tiny", "")

    loaded = await admin.load("tiny", "")
    assert loaded.status == (ModelStatus.LOADED, "") and loaded.served is not None
    assert await admin.ready("tiny", "1")
    assert (await admin.get("tiny", "latest")).version.key == ("tiny", 1)

    assert (await admin.unload("tiny", "")).version == 1
    assert not await admin.ready("tiny", "")
    with pytest.raises(FailedPrecondition, match="is not loaded"):
        await admin.unload("tiny", "")


async def test_promoting_moves_the_alias_to_a_loaded_version(admin: ModelAdmin) -> None:
    promoted = await admin.set_alias("tiny", "stable", "1")
    assert sorted(promoted.aliases) == ["latest", "stable"]
    assert promoted.status[0] == ModelStatus.LOADED


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda a: a.get("", ""), "name is required"),
        (lambda a: a.load("", "1"), "name is required"),
        (lambda a: a.unload("", ""), "name is required"),
        (lambda a: a.set_alias("tiny", "", "1"), "alias is required"),
        (lambda a: a.set_alias("tiny", "x", "²"), "version '²' must be a version number"),
        (lambda a: a.set_alias("tiny", "x", "1" * 19), "must be a version number"),
        (lambda a: a.import_model("", "text-classification", "b", [], 0), "name is required"),
        (lambda a: a.import_model("m", "", "b", [], 0), "task is required"),
        (
            lambda a: a.import_model("m", "text-classification", "", [], 0),
            "base is required: the name of an uploaded base",
        ),
    ],
)
async def test_bad_requests_are_refused_before_anything_runs(
    admin: ModelAdmin, call, expected: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await call(admin)
    assert expected in caught.value.message


async def test_import_names_what_is_missing(admin: ModelAdmin) -> None:
    with pytest.raises(NotFound, match="nonesuch"):  # the known tasks are named
        await admin.import_model("m", "nonesuch", "b", [], 0)
    with pytest.raises(NotFound) as caught:
        await admin.import_model("m", "text-classification", "absent", [], 0)
    assert caught.value.message == "base 'absent' not found: upload it with UploadBase"


async def test_metadata_and_missing_models(admin: ModelAdmin) -> None:
    version, task, versions = await admin.metadata("tiny", "")
    assert version.key == ("tiny", 1) and versions == [1]
    assert task is admin.task_of(version)
    with pytest.raises(NotFound):
        await admin.metadata("nope", "")
    assert not await admin.ready("nope", "")


def test_the_report_follows_the_server_state(admin: ModelAdmin) -> None:
    assert not admin.server_report().ready  # still starting
    admin.state.starting = False
    report = admin.server_report()
    assert report.ready and "serving" in report.capabilities
    assert report.models_bytes == 0 and report.providers == admin.registry.providers
    admin.state.draining = True
    assert not admin.server_report().ready
