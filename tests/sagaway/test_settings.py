"""Settings per component: each model reads its own variables and TOML keys, a variable several
components need feeds each, and the composed Settings hands every component its part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from examples.place_order.settings import ShippingSettings
from sagaway.settings import GatewaySettings, MessagingSettings, StorageSettings
from sagaway.settings.composed import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("SAGAWAY_")]:
        monkeypatch.delenv(name)


def test_a_component_reads_only_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWAY_KAFKA_BOOTSTRAP", "kafka:9092")
    monkeypatch.setenv("SAGAWAY_GATEWAY_PORT", "9100")

    messaging = MessagingSettings()

    assert messaging.kafka_bootstrap == "kafka:9092"
    assert not messaging.embedded
    assert not hasattr(messaging, "gateway_port")
    assert GatewaySettings().gateway_port == 9100


def test_a_shared_variable_feeds_every_component_that_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SAGAWAY_DATA_DIR", str(tmp_path))

    settings = Settings()

    assert settings.storage.data_dir == settings.messaging.data_dir == tmp_path
    assert settings.storage.database_url_for("inventory").endswith(f"{tmp_path}/inventory.db")


def test_service_in_the_database_url_gives_each_service_its_own_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAWAY_DATABASE_URL", "postgresql+asyncpg://u:p{w}@db:5432/{service}")

    storage = Settings().storage

    assert storage.database_url_for("payments") == "postgresql+asyncpg://u:p{w}@db:5432/payments"
    assert storage.database_url_for("gateway") == "postgresql+asyncpg://u:p{w}@db:5432/gateway"
    shared = StorageSettings(database_url="postgresql+asyncpg://u:p@db:5432/orders")
    assert shared.database_url_for("payments") == shared.database_url_for("gateway")
    assert shared.database_url_for("payments").endswith("/orders")


def test_the_toml_file_comes_after_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "sagaway.toml"
    config.write_text(
        'topic_prefix = "from-file."\npartitions = 3\n'
        '[[routes]]\npath = "/refunds"\nsaga = "refund"\n'
        "[console]\nport = 9001\n"
    )
    monkeypatch.setenv("SAGAWAY_CONFIG", str(config))
    monkeypatch.setenv("SAGAWAY_PARTITIONS", "5")
    monkeypatch.setenv("SAGAWAY_CONSOLE__HOST", "0.0.0.0")

    settings = Settings()

    assert settings.messaging.topic_prefix == "from-file."
    assert settings.messaging.partitions == 5
    assert [route.path for route in settings.gateway.routes] == ["/refunds"]
    assert (settings.console.host, settings.console.port) == ("0.0.0.0", 9001)


def test_flat_overrides_reach_every_component_and_unknown_names_are_refused() -> None:
    settings = load_settings(startup_retry_max_s=2.5, gateway_port=9200, sagas="a.b, c.d")

    assert settings.storage.startup_retry_max_s == 2.5
    assert settings.messaging.startup_retry_max_s == 2.5
    assert settings.relay.startup_retry_max_s == 2.5
    assert settings.gateway.gateway_port == 9200
    assert settings.orchestrator.sagas == ["a.b", "c.d"]
    with pytest.raises(ValidationError, match="no component has a setting named gatway_port"):
        load_settings(gatway_port=1)


def test_replace_changes_a_field_everywhere_and_model_copy_refuses_flat_names() -> None:
    settings = load_settings(topic_prefix="a.")

    changed = settings.replace(topic_prefix="b.", relay_batch_size=7)

    assert changed.messaging.topic_prefix == "b."
    assert changed.relay.relay_batch_size == 7
    assert settings.messaging.topic_prefix == "a."
    with pytest.raises(TypeError, match="use Settings.replace"):
        settings.model_copy(update={"topic_prefix": "c."})


def test_the_environment_of_settings_gives_another_process_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        topic_prefix="p.",
        producer_idempotence=False,
        bearer_secret=SecretStr("signing-key"),
        sagas="shop.sagas",
    )
    for name, value in settings.environment().items():
        monkeypatch.setenv(name, value)

    again = Settings()

    assert again == settings


def test_secret_values_list_every_configured_secret() -> None:
    settings = load_settings(
        database_url="postgresql+asyncpg://app:db-password@db/app",
        bearer_secret=SecretStr("bearer-key"),
        callback_secret=SecretStr("callback-key"),
    )

    assert set(settings.secret_values()) == {"db-password", "bearer-key", "callback-key"}


def test_the_example_reads_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWAY_SHIPPING_BLOCKED_COUNTRIES", "AQ, KP")

    assert ShippingSettings().shipping_blocked_countries == ["AQ", "KP"]
    assert "shipping_blocked_countries" not in StorageSettings.model_fields
    with pytest.raises(ValidationError):
        load_settings(shipping_blocked_countries=["AQ"])
