"""Every Kafka client's connection and security options, from Settings: one function per client library
(confluent-kafka, aiokafka, faust), so a process is moved to the SASL_SSL listener by settings alone."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from services.settings import Settings, get_settings, read_secret

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


class KafkaSecurityError(ValueError):
    """The client security settings cannot be used as they are; the message says which file or field to fix."""


def _password(settings: Settings) -> str:
    path = settings.kafka_password_path()
    if not path.is_file():
        raise KafkaSecurityError(
            f"no Kafka password for principal {settings.kafka_principal()!r} at {path}: set "
            "SWITCHYARD_KAFKA_PASSWORD_FILE, or run `make up` to make the dev broker's users"
        )
    return read_secret(path)


def _ca_file(settings: Settings) -> str:
    path = settings.kafka_ca_path()
    if not path.is_file():
        raise KafkaSecurityError(f"no CA certificate at {path}: set SWITCHYARD_KAFKA_CA_FILE, or run `make up`")
    return str(path)


def confluent_config(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """A confluent-kafka Producer, Consumer or AdminClient config: bootstrap servers and security from
    Settings, then `overrides` (which may name other bootstrap servers, never other credentials)."""
    settings = settings or get_settings()
    config: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol == "SASL_SSL":
        config |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_principal(),
            "sasl.password": _password(settings),
            "ssl.ca.location": _ca_file(settings),
        }
    return config | dict(overrides or {})


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS that checks the broker's certificate and host name against the configured CA."""
    return ssl.create_default_context(cafile=_ca_file(settings))


def aiokafka_config(settings: Settings | None = None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of an AIOKafkaConsumer or AIOKafkaProducer: bootstrap servers and security from
    Settings, then `overrides`."""
    settings = settings or get_settings()
    config: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol == "SASL_SSL":
        config |= {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_principal(),
            "sasl_plain_password": _password(settings),
            "ssl_context": ssl_context(settings),
        }
    return config | overrides


def faust_credentials(settings: Settings | None = None) -> CredentialsT | None:
    """A faust App's `broker_credentials` (None on PLAINTEXT)."""
    settings = settings or get_settings()
    if settings.kafka_security_protocol != "SASL_SSL":
        return None
    from faust import SASLCredentials

    return SASLCredentials(
        username=settings.kafka_principal(),
        password=_password(settings),
        ssl_context=ssl_context(settings),
        mechanism=settings.kafka_sasl_mechanism,
    )
