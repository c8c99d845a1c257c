"""Settings: defaults, the shipped config.toml, environment overrides."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from stt_server.services import default_engines
from stt_server.settings import SECTIONS, Settings, UpstreamSettings, load_settings, render_config
from stt_server.settings_table import SettingsError, check, hints, setting, spec_of

ROOT = Path(__file__).resolve().parent.parent


def test_config_toml_is_the_table_printed() -> None:
    """config.toml is what `stt-server config` prints from the table in settings.py: regenerate it
    with `stt-server config > config.toml` after adding a setting."""
    assert (ROOT / "config.toml").read_text() == render_config()


def test_every_setting_has_a_comment_and_a_valid_default() -> None:
    for section in [*map(type, (getattr(Settings(), n) for n in SECTIONS if n != "upstreams"))]:
        for f in fields(section):
            assert spec_of(f).comment, f"{section.__name__}.{f.name} has no comment"
    for f in fields(UpstreamSettings):
        assert spec_of(f).comment, f"UpstreamSettings.{f.name} has no comment"
    assert load_settings(ROOT / "config.toml", environ={}) == Settings()  # defaults pass their own checks


def test_config_toml_names_every_setting_with_a_comment() -> None:
    data = tomllib.loads((ROOT / "config.toml").read_text())
    settings = Settings()
    for section in fields(settings):
        if section.name == "upstreams":  # an array of tables, shipped commented out: see below
            assert "upstreams" not in data and load_settings(ROOT / "config.toml", environ={}).upstreams == ()
            continue
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


def _uncommented_upstream_example() -> tuple[str, str]:
    """The shipped config with its commented ``[[upstreams]]`` example switched on, and the example."""
    lines = (ROOT / "config.toml").read_text().splitlines()
    start = lines.index("# [[upstreams]]")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("# "))
    example = [line[2:] for line in lines[start:end]]
    return "\n".join([*lines[:start], *example, *lines[end:]]) + "\n", "\n".join(example)


def test_config_toml_documents_every_upstream_setting_in_its_commented_example(tmp_path: Path) -> None:
    text, example = _uncommented_upstream_example()
    (table,) = tomllib.loads(example)["upstreams"]
    assert set(table) == {f.name for f in fields(UpstreamSettings)}
    for line in example.splitlines()[1:]:
        assert " # " in line, f"upstream setting without a comment: {line}"
    path = tmp_path / "config.toml"
    path.write_text(text)
    settings = load_settings(path, environ={"STT_LOCAL_WORKERS": "1"})
    (upstream,) = settings.upstreams
    assert (upstream.engine, upstream.name, upstream.api_key_env) == ("openai", "cloudru", "CLOUDRU_API_KEY")
    assert settings.local.workers == 1  # the example leaves the sections after it intact
    engines = default_engines(settings, environ={"CLOUDRU_API_KEY": "sk-example"})
    assert list(engines) == ["local", "openai"] and engines["openai"].model == "openai/whisper-large-v3"


def test_upstreams_with_one_engine_name_form_one_engine(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[engine]\ndefault = \"cloud\"\n"
                    + "".join(f'[[upstreams]]\nengine = "{e}"\nname = "{n}"\nbase_url = "http://127.0.0.1:{p}/v1"\n'
                              f'model = "m-{e}"\nconcurrency = 3\n'
                              for e, n, p in [("cloud", "a", 1), ("cloud", "b", 2), ("groq", "c", 3)]))
    settings = load_settings(path, environ={})
    assert settings.engine.default == "cloud" and [u.name for u in settings.upstreams] == ["a", "b", "c"]
    engines = default_engines(settings, environ={})
    assert list(engines) == ["local", "cloud", "groq"]
    assert engines["cloud"].limits.concurrency == 6 and engines["groq"].model == "m-groq"
    assert settings.with_overrides(upstreams=[]).upstreams == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[upstreams]]\nname = "a"\nbase_url = "http://h/v1"\nmodel = "m"\napi_key = "sk-x"\n',
         r"unknown setting\(s\) in \[\[upstreams\]\] #1: 'api_key' \(did you mean 'api_key_env'\?\)"),
        ('[[upstreams]]\nname = "a"\nbase_url = "http://h/v1"\n', r"#1: .*model"),
        ('[upstreams]\nname = "a"\n', r"write \[\[upstreams\]\]"),
        ('[[upstreams]]\nname = "a"\nbase_url = "ftp://h"\nmodel = "m"\n', "base_url"),
    ],
    ids=["unknown-key", "missing-key", "not-an-array", "bad-url"],
)
def test_bad_upstream_tables_are_clear_errors(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=message):
        load_settings(path, environ={})


def test_an_upstream_engine_may_not_take_the_embedded_engines_name() -> None:
    settings = Settings().with_overrides(upstreams=[UpstreamSettings("a", "http://h/v1", "m", engine="local")])
    with pytest.raises(ValueError, match="'local' is taken"):
        default_engines(settings, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[sever]\nport = 1\n', r"unknown section\(s\): '\[sever\]' \(did you mean '\[server\]'\?\)"),
        ('[server]\nprot = 1\n', r"unknown setting\(s\) in \[server\]: 'prot' \(did you mean 'port'\?\)"),
        ('[queue]\nmax_queued = 10.9\n', r"\[queue\] max_queued = 10.9: expected an integer from 1"),
        ('[queue]\njob_workers = true\n', r"\[queue\] job_workers = true: expected an integer from 0"),
        ('[queue]\njob_workers = "2"\n', r"\[queue\] job_workers = \"2\": expected an integer"),
        ('[pipeline]\nframe_s = 0\n', r"\[pipeline\] frame_s = 0: expected a number above 0 up to 1"),
        ('[server]\nport = 70000\n', r"\[server\] port = 70000: expected an integer from 0 up to 65535"),
        ('[server]\nallow_unauthenticated_remote = "yes"\n', r"allow_unauthenticated_remote = \"yes\": expected true or false"),
        ('[log]\nlevel = "verbose"\n', r'\[log\] level = "verbose": expected one of "debug", "info"'),
        ('[openai]\npriority = "urgent"\n', r'expected one of "high", "normal", "low"'),
        ('server = 1\n', r"\[server\] must be a table"),
        ('[[upstreams]]\nname = "a"\nbase_url = "http://h/v1"\nmodel = "m"\nconcurrency = 0\n',
         r"\[\[upstreams\]\] #1 concurrency = 0: expected an integer from 1"),
        ('[[upstreams]]\nname = "a"\nbase_url = "http://h/v1"\nmodel = "m"\nverify_tls = 3\n',
         r"verify_tls = 3: expected true or false or a string"),
        ('[auth]\nkeys = [{ id = "a", sha256 = "key" }]\n', r"\[auth\]: API key 'a': sha256 must be 64"),
        ('[server\nport = 1\n', r"is not valid TOML"),
    ],
)
def test_mistakes_in_the_file_are_refused_naming_the_setting(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError, match=message):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STT_SERVER_PORT": "80a"}, r"STT_SERVER_PORT='80a' \(for \[server\] port\): expected an integer"),
        ({"STT_SERVER_ALLOW_UNAUTHENTICATED_REMOTE": "ture"},
         r"STT_SERVER_ALLOW_UNAUTHENTICATED_REMOTE='ture' .*: expected true or false"),
        ({"STT_QUEUE_MAX_QUEUED": "10.9"}, r"STT_QUEUE_MAX_QUEUED='10.9' .*: expected an integer from 1"),
        ({"STT_PIPELINE_FRAME_S": "nan"}, r"STT_PIPELINE_FRAME_S='nan' .*: expected a number above 0"),
        ({"STT_LOG_LEVEL": "loud"}, r"STT_LOG_LEVEL='loud' \(for \[log\] level\): expected one of"),
        ({"STT_AUTH_KEYS": "alice:user"}, r"\[auth\] from the environment: API keys must be written id:role:sha256"),
    ],
)
def test_bad_environment_variables_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(ROOT / "config.toml", environ=env)


@pytest.mark.parametrize(("env", "value"), [("yes", True), ("ON", True), ("0", False), ("false", False)])
def test_boolean_words_from_the_environment(env: str, value: bool) -> None:
    settings = load_settings(None, environ={"STT_SERVER_ALLOW_UNAUTHENTICATED_REMOTE": env})
    assert settings.server.allow_unauthenticated_remote is value


@pytest.mark.parametrize(
    ("config", "env", "needle"),
    [
        ("[sever]\nport = 1\n", {}, "unknown section(s): '[sever]'"),
        ("", {"STT_SERVER_PORT": "80a"}, "STT_SERVER_PORT='80a' (for [server] port): expected an integer"),
    ],
    ids=["file", "environment"],
)
def test_the_server_exits_2_at_start_up_with_the_message(tmp_path: Path, config: str, env: dict[str, str],
                                                         needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(config)
    done = subprocess.run([sys.executable, "-m", "stt_server", "serve", "--config", str(path), "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


@dataclass(frozen=True)
class _Lists:
    hosts: tuple[str, ...] = setting((), "Host names.")
    ports: tuple[int, ...] = setting((), "Ports.", ge=1)


@pytest.mark.parametrize(
    ("key", "value", "env", "result"),
    [
        ("hosts", ["a", "b"], None, ("a", "b")),
        ("hosts", "a, b", "STT_X_HOSTS", ("a", "b")),
        ("ports", "80,443", "STT_X_PORTS", (80, 443)),
        ("hosts", ["a", 1], None, "[x] hosts = [\"a\", 1]: expected a list of strings"),
        ("hosts", "x", None, "[x] hosts = \"x\": expected a list of strings"),
        ("ports", [0], None, "[x] ports = [0]: expected a list of integers from 1"),
        ("ports", "80,x", "STT_X_PORTS", "STT_X_PORTS='80,x' (for [x] ports): expected a list of integers from 1"),
    ],
)
def test_a_list_setting_is_one_line_too(key: str, value: object, env: str | None, result: object) -> None:
    """A setting such as ``allowed_hosts: tuple[str, ...] = setting((), "...")`` needs nothing else."""
    field = {f.name: f for f in fields(_Lists)}[key]
    if isinstance(result, str):
        with pytest.raises(SettingsError) as raised:
            check(f"[x] {key}", field, hints(_Lists)[key], value, env=env)
        assert str(raised.value) == result
    else:
        assert check(f"[x] {key}", field, hints(_Lists)[key], value, env=env) == result
