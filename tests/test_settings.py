"""Settings: defaults, the shipped config.toml, environment overrides."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from stt_server.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_config_toml_names_every_setting_with_a_comment() -> None:
    data = tomllib.loads((ROOT / "config.toml").read_text())
    settings = Settings()
    for section in fields(settings):
        keys = {f.name for f in fields(getattr(settings, section.name))}
        assert set(data.get(section.name, {})) == keys, section.name
    lines = (ROOT / "config.toml").read_text().splitlines()
    for number, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            above = [ln for ln in lines[:number] if ln.strip()]
            assert above[-1].startswith("#") or "=" in above[-1], f"setting without a comment: {line}"


@pytest.mark.parametrize(
    ("env", "section", "key", "value"),
    [
        ({"STT_SERVER_PORT": "9001"}, "server", "port", 9001),
        ({"STT_LOCAL_WORKERS": "1"}, "local", "workers", 1),
        ({"STT_PIPELINE_SILENCE_DB": "-35.5"}, "pipeline", "silence_db", -35.5),
        ({"STT_LOCAL_WORD_TIMESTAMPS": "true"}, "local", "word_timestamps", True),
        ({"STT_ENGINE_DEFAULT": "openai"}, "engine", "default", "openai"),
    ],
)
def test_environment_overrides_the_file(env: dict[str, str], section: str, key: str, value: object) -> None:
    settings = load_settings(ROOT / "config.toml", environ=env)
    assert getattr(getattr(settings, section), key) == value


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server]\nprot = 1\n")
    with pytest.raises(ValueError, match="prot"):
        load_settings(path, environ={})
