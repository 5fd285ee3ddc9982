"""The plugin factory: entry-point discovery, --plugin modules, and start-up failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import SENTIMENT_PLUGIN, install_distribution

from edgetune.errors import PluginError
from edgetune.plugins.manager import BUILTIN, ENTRY_POINT, MODULE, build_plugins


def test_builtins_are_plugins() -> None:
    plugins = build_plugins(autoload=False)
    assert [(i.name, i.origin) for i in plugins.infos] == [
        ("edgetune.plugins.text_classification", BUILTIN),
        ("edgetune.plugins.multi_label", BUILTIN),
        ("edgetune.plugins.token_classification", BUILTIN),
        ("edgetune.plugins.image_classification", BUILTIN),
        ("edgetune.plugins.sentence_classification", BUILTIN),
        ("edgetune.plugins.readers", BUILTIN),
        ("edgetune.plugins.token_auth", BUILTIN),
        ("edgetune.plugins.job_runners", BUILTIN),
    ]
    assert plugins.reader_plugins == {
        "jsonl": "edgetune.plugins.readers",
        "csv": "edgetune.plugins.readers",
    }
    assert plugins.task_plugins == {
        "text-classification": "edgetune.plugins.text_classification",
        "multi-label-classification": "edgetune.plugins.multi_label",
        "token-classification": "edgetune.plugins.token_classification",
        "image-classification": "edgetune.plugins.image_classification",
        "sentence-classification": "edgetune.plugins.sentence_classification",
    }


def test_entry_point_plugin_is_discovered_with_its_distribution(site: Path) -> None:
    install_distribution(
        site,
        "acme-tasks",
        "1.2.0",
        {"acme_sentiment": SENTIMENT_PLUGIN},
        {"sentiment": "acme_sentiment"},
    )
    plugins = build_plugins()
    info = next(i for i in plugins.infos if i.name == "sentiment")
    assert (info.origin, info.distribution, info.distribution_version, info.module) == (
        ENTRY_POINT,
        "acme-tasks",
        "1.2.0",
        "acme_sentiment",
    )
    assert info.describe() == "entry point of acme-tasks 1.2.0"
    assert plugins.task("fake-sentiment").name == "fake-sentiment"
    assert plugins.task_plugins["fake-sentiment"] == "sentiment"
    assert "fake-sentiment" not in build_plugins(autoload=False).tasks


def test_plugin_module_from_the_command_line(site: Path) -> None:
    (site / "acme_local.py").write_text(SENTIMENT_PLUGIN)
    plugins = build_plugins(["acme_local"], autoload=False)
    info = plugins.infos[-1]
    assert (info.name, info.origin, info.describe()) == (
        "acme_local",
        MODULE,
        "--plugin acme_local",
    )
    assert "fake-sentiment" in plugins.tasks


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "import no_such_module_anywhere\n",
            "plugin 'broken' (entry point of acme-broken 0.1) failed to import: "
            "ModuleNotFoundError",
        ),
        (
            "import edgetune\n@edgetune.hookimpl\ndef edgetune_register_taskz(register):\n    pass\n",
            "plugin 'broken' (entry point of acme-broken 0.1): unknown hook 'edgetune_register_taskz'",
        ),
        (
            "import edgetune\n@edgetune.hookimpl\ndef edgetune_register_tasks(register, extra):\n    pass\n",
            "plugin 'broken' (entry point of acme-broken 0.1)",
        ),
        (
            "import edgetune\n@edgetune.hookimpl\ndef edgetune_register_tasks(register):\n"
            "    register(object())\n",
            "plugin 'broken' (entry point of acme-broken 0.1) registered <object",
        ),
    ],
    ids=["import-error", "unknown-hook", "wrong-signature", "not-a-task"],
)
def test_bad_plugins_fail_start_up_naming_the_plugin(site: Path, source: str, message: str) -> None:
    install_distribution(
        site, "acme-broken", "0.1", {"acme_broken": source}, {"broken": "acme_broken"}
    )
    with pytest.raises(PluginError) as caught:
        build_plugins()
    assert message in caught.value.message
    build_plugins(autoload=False)  # the env-var / flag path skips it


def test_two_plugins_claiming_one_task_name(site: Path) -> None:
    install_distribution(
        site, "acme-one", "1.0", {"acme_one": SENTIMENT_PLUGIN}, {"one": "acme_one"}
    )
    install_distribution(
        site, "acme-two", "2.0", {"acme_two": SENTIMENT_PLUGIN}, {"two": "acme_two"}
    )
    with pytest.raises(PluginError) as caught:
        build_plugins()
    assert "Task 'fake-sentiment' is registered twice" in caught.value.message
    assert "entry point of acme-one 1.0" in caught.value.message
    assert "entry point of acme-two 2.0" in caught.value.message


def test_missing_plugin_module() -> None:
    with pytest.raises(PluginError, match="plugin module 'acme_nowhere' failed to import"):
        build_plugins(["acme_nowhere"], autoload=False)


RUNNER_PLUGIN = """
import edgetune
from edgetune.runner import JobRunner


class Runner(JobRunner):
    name = "{name}"

    async def start(self, job, attempt, env, workdir, signals):
        raise NotImplementedError


@edgetune.hookimpl
def edgetune_register_job_runners(register):
    register(Runner())
"""


def test_a_plugin_adds_a_job_runner_and_cannot_take_a_built_in_name(site: Path) -> None:
    (site / "acme_runner.py").write_text(RUNNER_PLUGIN.format(name="slurm"))
    plugins = build_plugins(["acme_runner"], autoload=False)
    assert sorted(plugins.runners) == ["local", "ray", "slurm"]
    assert plugins.runner_plugins["slurm"] == "acme_runner"
    assert plugins.runner("slurm").name == "slurm"
    (site / "acme_clash.py").write_text(RUNNER_PLUGIN.format(name="local"))
    with pytest.raises(PluginError) as caught:
        build_plugins(["acme_clash"], autoload=False)
    assert "JobRunner 'local' is registered twice" in caught.value.message
    assert "edgetune.plugins.job_runners" in caught.value.message
