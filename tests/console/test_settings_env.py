"""The console's settings from nested environment variables, as the README says:
SAGAWAY_CONSOLE__<FIELD> one field at a time (over the TOML file's [console] table), or
SAGAWAY_CONSOLE as a JSON object."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from console.auth import hash_password
from sagaway.settings.composed import load_settings

HASH = hash_password("env-pw")


def test_nested_console_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    users = [{"name": "eve", "role": "operator", "password_hash": HASH}]
    monkeypatch.setenv("SAGAWAY_CONSOLE__COOKIE_SECURE", "false")
    monkeypatch.setenv("SAGAWAY_CONSOLE__USERS", orjson.dumps(users).decode())
    monkeypatch.setenv("SAGAWAY_CONSOLE__PORT", "9123")
    monkeypatch.setenv("SAGAWAY_CONSOLE__SESSION_SECRET", "from-the-environment")
    monkeypatch.setenv("SAGAWAY_CONSOLE__LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("SAGAWAY_CONSOLE__SERVICES", '["orchestrator", "billing"]')
    monkeypatch.setenv("SAGAWAY_CONSOLE__TRUSTED_PROXIES", "10.0.0.0/8, ::1")
    console = load_settings().console
    assert console.cookie_secure is False
    assert console.port == 9123
    assert [(u.name, u.role, u.password_hash) for u in console.users] == [("eve", "operator", HASH)]
    assert console.session_secret is not None
    assert console.session_secret.get_secret_value() == "from-the-environment"
    assert console.login_max_failures == 3
    assert console.services == ["orchestrator", "billing"]
    assert console.trusted_proxies == ["10.0.0.0/8", "::1"]


def test_a_nested_variable_overrides_one_field_of_the_toml_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "sagaway.toml"
    config.write_text(
        "[console]\nport = 9200\ncookie_secure = true\n"
        f'[[console.users]]\nname = "tom"\npassword_hash = "{HASH}"\n'
    )
    monkeypatch.setenv("SAGAWAY_CONFIG", str(config))
    monkeypatch.setenv("SAGAWAY_CONSOLE__COOKIE_SECURE", "false")
    console = load_settings().console
    assert (console.port, console.cookie_secure) == (9200, False)
    assert [u.name for u in console.users] == ["tom"]


def test_the_json_variable_and_a_nested_one_combine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWAY_CONSOLE", '{"port": 9300, "page_size": 20}')
    monkeypatch.setenv("SAGAWAY_CONSOLE__PAGE_SIZE", "30")
    console = load_settings().console
    assert (console.port, console.page_size) == (9300, 30)
