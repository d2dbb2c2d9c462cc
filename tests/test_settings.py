"""Configuration: every problem reported with its key, overrides, secret files, the shipped file."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.config import MASK, Problem, build, defaults_of, dump, table_key, tomllib
from proxy.settings import DEFAULT_CONFIG, ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    return [str(p) for p in info.value.problems]


def test_shipped_config_loads_to_the_defaults() -> None:
    assert load_settings(DEFAULT_CONFIG, {}) == Settings()


def test_shipped_config_lists_every_setting_with_its_default_and_a_comment() -> None:
    table = tomllib.loads(DEFAULT_CONFIG.read_text())
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for section in dataclasses.fields(Settings):
        section_cls = typing.get_type_hints(Settings)[section.name]
        name = table_key(section)
        shipped = table.get(name)
        assert shipped is not None, f"config.toml has no [{name}] section"
        for key, default in defaults_of(section_cls).items():
            if default is None:
                # An unset optional setting is shown commented out.
                assert any(re.match(rf"#\s*{key}\s*=", line) for line in lines), key
                continue
            assert key in shipped, f"config.toml lacks {name}.{key}"
            value = shipped[key]
            expected = list(default) if isinstance(default, tuple) else default
            assert _plain(value) == _plain(expected), f"{name}.{key}"
            if dataclasses.is_dataclass(default):
                continue  # a sub-table: compared as a whole above, it has no `key =` line
            index = next(i for i, line in enumerate(lines) if re.match(rf"{key}\s*=", line))
            assert lines[index - 1].startswith("#"), f"{name}.{key} has no comment"


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    return value


def test_every_problem_is_reported_at_once_with_key_and_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[proxy]
port = 70000
upstream = "ftp://omero"
prefix = "omero/"
debug = "yes"
trusted_proxies = ["10.0.0.0/8", "not-a-network"]
read_timeout = 0
log_level = "loud"
""",
    )
    problems = problems_of(path)
    assert problems == [
        "proxy.port: 70000 is too large: the maximum is 65535",
        "proxy.upstream: 'ftp://omero' is not valid: "
        "must be an http:// or https:// URL with a host",
        "proxy.prefix: 'omero/' is not valid: must be empty or a path like \"/omero\" "
        "(leading slash, no trailing slash)",
        "proxy.debug: 'yes' is not a boolean",
        "proxy.trusted_proxies: ['10.0.0.0/8', 'not-a-network'] is not valid: "
        "'not-a-network' is not an IP address or CIDR network",
        "proxy.read_timeout: 0 is too small: the minimum is 0.1",
        "proxy.log_level: 'loud' is not one of 'debug', 'info', 'warning', 'error'",
    ]


def test_unknown_keys_and_sections_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy]\nprot = 1\n[proxxy]\nhost = 'x'\n")
    assert problems_of(path) == [
        "proxxy: unknown setting (did you mean 'proxy'?)",
        "proxy.prot: unknown setting (did you mean 'port'?)",
    ]


def test_wrong_types_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy]\nport = '8080'\ntrusted_proxies = '10.0.0.0/8'\nproxy = 3\n")
    assert problems_of(path) == [
        "proxy.proxy: unknown setting",
        "proxy.port: '8080' is not an integer",
        "proxy.trusted_proxies: '10.0.0.0/8' is not a list",
    ]


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, "[proxy\nport = 1\n"))
    assert len(problems) == 1
    assert problems[0].startswith("syntax: ")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    problems = problems_of(tmp_path / "nope.toml")
    assert problems == ["file: cannot read: No such file or directory"]


def test_environment_overrides_win_and_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy]\nport = 9000\n")
    settings = load_settings(
        path,
        {
            "PORTER_PROXY__PORT": "9100",
            "PORTER_PROXY__DEBUG": "true",
            "PORTER_PROXY__HOST": "0.0.0.0",
            "PORTER_PROXY__TRUSTED_PROXIES": '["10.0.0.0/8"]',
            "UNRELATED": "1",
        },
    )
    assert settings.proxy.port == 9100
    assert settings.proxy.debug is True
    assert settings.proxy.host == "0.0.0.0"
    assert settings.proxy.trusted_proxies == ("10.0.0.0/8",)


def test_bad_environment_override_names_its_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    problems = problems_of(path, {"PORTER_PROXY__PORT": "high", "PORTER_PROXY__COLOUR": "red"})
    assert problems == [
        "proxy.colour (from PORTER_PROXY__COLOUR): unknown setting",
        "proxy.port (from PORTER_PROXY__PORT): 'high' is not an integer",
    ]


# The secret-file mechanism is generic; a small section with a secret exercises it.
@dataclass(frozen=True)
class _Section:
    user: str = field(default="public", metadata={"doc": "user"})
    password: str | None = field(default=None, metadata={"doc": "password", "secret": True})


def _build(table: dict[str, object]) -> tuple[object, list[Problem]]:
    problems: list[Problem] = []
    return build(_Section, table, "public", problems), problems


def test_secret_is_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr3t\n")
    section, problems = _build({"password_file": str(secret)})
    assert problems == []
    assert isinstance(section, _Section)
    assert section.password == "s3cr3t"
    assert "s3cr3t" not in "\n".join(dump(section))
    assert f'password = "{MASK}"' in dump(section)


def test_secret_file_problems_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    _, problems = _build({"password_file": str(tmp_path / "missing")})
    missing = str(tmp_path / "missing")
    assert [str(p) for p in problems] == [
        f"public.password_file: cannot read {missing!r}: No such file or directory"
    ]
    _, problems = _build({"password_file": str(empty)})
    assert [str(p) for p in problems] == [f"public.password_file: the file {str(empty)!r} is empty"]
    _, problems = _build({"password": "x", "password_file": str(empty)})
    assert [str(p) for p in problems] == [
        "public.password: set both password and password_file: choose one"
    ]


def test_problem_messages_never_show_a_secret_value() -> None:
    _, problems = _build({"password": 12345})
    assert [str(p) for p in problems] == ["public.password: the value is not a string"]


def test_shared_public_section_feeds_both_owners_and_reports_strays(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[public]\nenabled = true\nurl_filter = "^/webgateway/.*"\nuser = "public"\n'
        'password = "pw-public-1"\nurl_filtre = "x"\n',
    )
    assert problems_of(path) == ["public.url_filtre: unknown setting (did you mean 'url_filter'?)"]
    path.write_text('[public]\nenabled = true\nurl_filter = "^/webgateway/.*"\nuser = "public"\n')
    settings_problems = problems_of(path)
    assert settings_problems == ["public.password: must be set when public access is enabled"]
    path.write_text('[public]\nurl_filter = "^/webgateway/.*"\nuser = "public"\n')
    settings = load_settings(
        path, {"PORTER_PUBLIC__ENABLED": "true", "PORTER_PUBLIC__PASSWORD": "pw-public-1"}
    )
    assert settings.public.enabled is True
    assert settings.public_session.enabled is True
    assert settings.public_session.password == "pw-public-1"
    printed = "\n".join(dump(settings))
    public = printed.split("[public]", 1)[1].split("\n[", 1)[0]
    assert public.count("\nenabled = true") == 1
    assert "pw-public-1" not in printed


def test_oidc_settings_name_the_key_of_each_problem(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    path = write(
        tmp_path,
        f"""
[login]
password_login = false

[[oidc.providers]]
id = "Bad Id"
issuer = "http://idp.example.org"
client_id = "porter"
client_secret_file = "{secret}"
algorithms = ["HS256"]
scopes = ["profile"]

[[oidc.providers]]
id = "ok"
issuer = "https://idp.example.org"
group_required = true
""",
    )
    problems = problems_of(path)
    assert any(p.startswith("oidc.providers[0].id: 'Bad Id'") for p in problems), problems
    assert any(p.startswith("oidc.providers[0].issuer:") and "https" in p for p in problems)
    assert any(p.startswith("oidc.providers[0].algorithms:") and "HMAC" in p for p in problems)
    assert any(p.startswith("oidc.providers[0].scopes:") and "openid" in p for p in problems)
    assert any(p.startswith("oidc.providers[1].client_id:") for p in problems)
    assert any(p.startswith("oidc.providers[1].group_required:") for p in problems)
    assert not any("s3cret-value" in p for p in problems)


def test_password_login_off_needs_a_provider(tmp_path: Path) -> None:
    path = write(tmp_path, "[login]\npassword_login = false\n")
    assert problems_of(path) == [
        "login.password_login: is false but no [[oidc.providers]] is configured: "
        "nobody could log in"
    ]


def test_a_pattern_too_deep_or_too_large_to_compile_is_a_problem_naming_its_key(
    tmp_path: Path,
) -> None:
    deep = "(" * 100_000
    path = write(
        tmp_path,
        f"""
[public]
url_filter = "{deep}"

[sso]
deny_users_regex = ["{deep}", "a{{99999999999}}"]
""",
    )
    problems = problems_of(path)
    assert [p.split(":", 1)[0] for p in problems] == ["public.url_filter", "sso.deny_users_regex"]
    assert "nested too deeply" in problems[0]
    assert "nested too deeply" in problems[1]
