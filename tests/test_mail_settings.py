"""The [mail] settings validate what OMERO.web admins would get wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailer.settings import MailSettings
from proxy.config import ConfigError
from proxy.settings import load_settings


def check_of(name: str) -> object:
    return next(f for f in dataclasses.fields(MailSettings) if f.name == name).metadata["check"]


@pytest.mark.parametrize(
    "address", ["not-an-address", "a@b@c", "Ada <ada@example.org>", "ada@example.org\r\nBcc: x@y"]
)
def test_admin_addresses_must_be_plain_addresses(address: str) -> None:
    check = check_of("admins")
    with pytest.raises(ValueError, match="is not an e-mail address"):
        check((("Ada", address),))  # type: ignore[operator]


def test_well_formed_admins_pass() -> None:
    check = check_of("admins")
    check((("Ada Admin", "ada@example.org"), ("Ops", "ops+omero@lab.example.ac.uk")))  # type: ignore[operator]


def test_starttls_and_implicit_tls_exclude_each_other() -> None:
    problems = MailSettings(email_use_tls=True, email_use_ssl=True).problems()
    assert [name for name, _ in problems] == ["email_use_ssl"]


def test_password_without_user_is_a_problem() -> None:
    assert MailSettings(email_host_password="x").problems() == [
        ("email_host_password", "is set but email_host_user is not")
    ]


def test_smtp_password_over_plain_smtp_to_a_remote_host_is_a_problem() -> None:
    remote = MailSettings(
        email_host="smtp.example.org", email_host_user="u", email_host_password="p"
    )
    assert [name for name, _ in remote.problems()] == ["email_host_password"]
    assert dataclasses.replace(remote, email_use_tls=True).problems() == []
    assert dataclasses.replace(remote, email_host="127.0.0.1").problems() == []


def test_defaults_are_safe_and_send_nothing() -> None:
    settings = MailSettings()
    assert settings.problems() == []
    assert settings.active is False  # no admins
    assert settings.email_port == 25
    assert settings.tls_verify is True


def test_admins_of_the_wrong_shape_are_shown_the_right_one(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[mail]\nadmins = ["ada@example.org"]\n')
    with pytest.raises(ConfigError) as found:
        load_settings(config, environ={})
    [problem] = found.value.problems
    assert problem.key == "mail.admins[0]"
    assert problem.message == (
        "'ada@example.org' is not a list; "
        'write it like admins = [["Ada Admin", "ada@example.org"]]'
    )
