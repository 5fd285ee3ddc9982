"""Settings: flat EDGETUNE_* names read into frozen groups, rules checked when read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgetune.errors import InvalidArgument
from edgetune.settings import FIELD_GROUPS, GROUPS, Settings, load_settings


def test_environment_names_stay_flat_and_land_in_their_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path))
    monkeypatch.setenv("EDGETUNE_MAX_TEXT_BYTES", "100")
    monkeypatch.setenv("EDGETUNE_BATCH_MAX_DELAY_MS", "2.5")
    monkeypatch.setenv("EDGETUNE_PLUGINS", '["mypkg.plugin"]')
    monkeypatch.setenv("edgetune_access_log", "json")  # names are not case-sensitive
    settings = load_settings(max_batch_size=8)  # an argument beside the environment
    assert settings.home == tmp_path
    assert (settings.limits.max_text_bytes, settings.limits.max_batch_size) == (100, 8)
    assert settings.batching.batch_max_delay_ms == 2.5
    assert settings.server.plugins == ["mypkg.plugin"]
    assert settings.observability.access_log == "json"
    # an argument wins over the environment, field by field
    assert load_settings(max_text_bytes=7).limits.max_text_bytes == 7
    assert settings.flat()["max_text_bytes"] == 100 and len(settings.flat()) == 1 + len(
        FIELD_GROUPS
    )


def test_every_field_has_one_group_and_settings_are_frozen() -> None:
    assert sum(len(group.model_fields) for group in GROUPS.values()) == len(FIELD_GROUPS)
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.limits.max_batch_size = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        settings.home = Path("/elsewhere")  # type: ignore[misc]
    changed = settings.replace(max_batch_size=3, model_control="lazy", home=Path("/h"))
    assert changed.home == Path("/h")
    assert (changed.limits.max_batch_size, changed.runtime.model_control) == (3, "lazy")
    assert settings.limits.max_batch_size == 64  # the original is untouched


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 70_000}, "setting EDGETUNE_PORT: Input should be less than or equal to 65535"),
        ({"model_control": "eager"}, "setting EDGETUNE_MODEL_CONTROL: Input should be 'all'"),
        ({"tls_cert_file": "/x.pem"}, "TLS needs both tls_cert_file and tls_key_file"),
        ({"tls_client_ca_file": "/ca.pem"}, "tls_client_ca_file needs tls_cert_file"),
        ({"pinned_models": ["a:b:c"]}, "pinned model 'a:b:c' is not `name` or `name:version`"),
        ({"pinned_models": [":1"]}, "pinned model ':1'"),
        ({"max_batchsize": 4}, "unknown setting 'max_batchsize'"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Settings().replace(**changes)
    assert message in refused.value.message


def test_pinned_models_are_parsed_once_into_routes() -> None:
    settings = Settings(pinned_models=["b:2", "a", "a"])
    assert settings.runtime.pinned_routes == [("a", "latest"), ("b", "2")]


def test_the_server_stops_at_start_up_naming_a_bad_variable(tmp_path: Path) -> None:
    env = {"EDGETUNE_HOME": str(tmp_path), "EDGETUNE_BATCH_MAX_SIZE": "0", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "edgetune", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "setting EDGETUNE_BATCH_MAX_SIZE: Input should be greater than or equal to 1" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_a_training_process_reads_back_the_settings_left_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgetune.training.jobs import settings_env

    monkeypatch.setenv("EDGETUNE_REPOSITORY_DIR", "/somewhere/else")  # inherited, then unset
    settings = Settings(home=tmp_path, repository_dir=None)
    env = settings_env(settings)
    assert "EDGETUNE_REPOSITORY_DIR" not in env
    assert "EDGETUNE_TLS_CERT_FILE" not in env
    for key in [k for k in os.environ if k.startswith("EDGETUNE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("EDGETUNE_"):
            monkeypatch.setenv(key, value)
    child = load_settings()  # what the training process builds from that environment
    assert child.runtime.repository_dir is None
    assert child.models_dir == tmp_path / "models"
