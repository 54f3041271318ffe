"""Kafka client security from Settings, the dev broker's certificates and passwords, and the ACLs generated from
each process's topic access; no broker needed (tests/integration/test_kafka_acls.py runs them against one)."""

from __future__ import annotations

import ast
import ssl
import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from cryptography import x509

from services.infra import acls
from services.infra.kafka_secrets import BROKER_FILE, CA_FILE, ensure, password_file, scram_arguments, secrets_dir
from services.infra.topic_specs import load_topics
from services.runtime.kafka_clients import KafkaSecurityError, aiokafka_config, confluent_config, faust_credentials
from services.settings import REPO_ROOT, Settings
from services.stages import CHAIN, FUSED
from services.wire.schema_registry import SchemaRegistry


def sasl_settings(var_dir: Path, username: str | None = "switchyard-router") -> Settings:
    ensure(Settings(var_dir=var_dir), ["admin", "switchyard-router"])
    return Settings(
        var_dir=var_dir,
        kafka_bootstrap="broker:9094",
        kafka_security_protocol="SASL_SSL",
        kafka_username=username,
    )


def test_plaintext_clients_get_the_bootstrap_servers_and_no_credentials(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, kafka_bootstrap="broker:9092")
    assert confluent_config({"acks": "all"}, settings) == {"bootstrap.servers": "broker:9092", "acks": "all"}
    assert aiokafka_config(settings, acks=1) == {"bootstrap_servers": "broker:9092", "acks": 1}
    assert faust_credentials(settings) is None


def test_sasl_ssl_clients_log_in_as_their_principal_with_the_password_from_its_file(tmp_path: Path) -> None:
    settings = sasl_settings(tmp_path)
    password = password_file(settings, "switchyard-router").read_text().strip()
    config = confluent_config({"bootstrap.servers": "other:9094"}, settings)
    assert config == {
        "bootstrap.servers": "other:9094",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "switchyard-router",
        "sasl.password": password,
        "ssl.ca.location": str(tmp_path / "secrets" / "kafka" / CA_FILE),
    }
    aio = aiokafka_config(settings)
    assert (aio["security_protocol"], aio["sasl_plain_username"], aio["sasl_plain_password"]) == (
        "SASL_SSL",
        "switchyard-router",
        password,
    )
    context = aio["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def test_faust_gets_sasl_credentials_over_tls(tmp_path: Path) -> None:
    credentials = faust_credentials(sasl_settings(tmp_path))
    assert credentials is not None
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.username == "switchyard-router"  # type: ignore[attr-defined]


def test_a_tool_without_a_username_is_the_admin(tmp_path: Path) -> None:
    config = confluent_config(settings=sasl_settings(tmp_path, username=None))
    assert config["sasl.username"] == "admin"


def test_a_principal_without_a_password_file_is_told_which_file_and_how_to_fix_it(tmp_path: Path) -> None:
    settings = sasl_settings(tmp_path, username="switchyard-nobody")
    with pytest.raises(KafkaSecurityError, match=r"switchyard-nobody\.password.*SWITCHYARD_KAFKA_PASSWORD_FILE"):
        confluent_config(settings=settings)


def test_the_dev_secrets_are_private_made_once_and_the_broker_certificate_is_signed_by_the_ca(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    made = ensure(settings, ["admin", "switchyard-pos"])
    assert set(made) == {CA_FILE, BROKER_FILE, "admin.password", "switchyard-pos.password"}
    directory = secrets_dir(settings)
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert ensure(settings, ["admin", "switchyard-pos"]) == []
    ca = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
    broker = x509.load_pem_x509_certificates((directory / BROKER_FILE).read_bytes())[0]
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert scram_arguments(settings, ["switchyard-pos"]) == [
        f"SCRAM-SHA-512=[name=switchyard-pos,password={password_file(settings, 'switchyard-pos').read_text()}]"
    ]


def test_a_till_may_write_requests_and_feedback_and_read_nothing() -> None:
    assert acls.topic_access()[acls.TILL] == (frozenset(), frozenset({"requests", "feedback"}))


def test_each_stage_reads_its_input_and_writes_its_output_and_dead_letters() -> None:
    access = acls.topic_access()
    chain_topics = ["requests", "routed", "stitched", "governed", "answered", "audited"]
    for index, stage in enumerate(CHAIN):
        reads, writes = access[stage]
        assert chain_topics[index] in reads and {chain_topics[index + 1], f"dlq.{stage}"} <= writes
        # no stage writes another's output
        assert not writes & (set(chain_topics) - {chain_topics[index + 1]})
    assert access[FUSED][1] == frozenset().union(*(access[stage][1] for stage in CHAIN))


def test_the_approvals_process_writes_its_dead_letters_and_the_gateway_reads_the_pii_vault() -> None:
    """Found by the chain tests on SASL_SSL: the approvals process dead-letters refused decisions, and the gateway
    opens vault entries of answers it reads back (services/gateway/app.py)."""
    access = acls.topic_access()
    assert "dlq.approvals" in access["approvals"][1]
    assert "pii.vault" in access["gateway"][0] and "pii.vault" not in access["gateway"][1]


def test_the_health_app_writes_model_calls_for_its_probes_and_holds_only_its_own_extra_grants() -> None:
    """Found by test_failover on SASL_SSL: the health app probes a provider that is down through the provider layer,
    which reports each probe to model.calls; refused there, a provider never came back. Faust needs its own group
    and its changelog topics (under its app id), and no CREATE on the topics it only uses."""
    reads, writes = acls.topic_access()["health"]
    assert reads == {"model.calls"} and writes == {"model.calls", "model.health"}
    grants = acls.desired_grants(Settings(topic_prefix="t1."), {"health": (reads, writes)})
    extra = {str(g) for g in grants if g.operation not in ("read", "write") or g.resource != "topic"}
    assert extra == {
        "User:switchyard-health READ group t1.switchyard-health",
        *(f"User:switchyard-health {op} topic t1.switchyard-health-*" for op in ("CREATE", "DESCRIBE_CONFIGS")),
    }


def test_revoking_refuses_the_empty_prefix_whose_acls_are_the_deployments() -> None:
    with pytest.raises(ValueError, match="deployment's own ACLs"):
        acls.revoke(AdminClient({"bootstrap.servers": "127.0.0.1:1"}), Settings(topic_prefix=""))


def test_every_topic_granted_is_declared_in_topics() -> None:
    declared = {spec.name for spec in load_topics(REPO_ROOT / "topics", SchemaRegistry.load(REPO_ROOT / "schemas"))}
    for process, (reads, writes) in acls.topic_access().items():
        assert reads | writes <= declared, process


def test_grants_are_under_the_prefix_and_only_stages_and_approvals_hold_transactional_ids() -> None:
    grants = acls.desired_grants(Settings(topic_prefix="t1."), acls.topic_access())
    assert all(grant.name.startswith("t1.") for grant in grants)
    transactional = {g.user for g in grants if g.resource == "transactional_id"}
    assert transactional == {acls.principal(p) for p in (*CHAIN, FUSED, "approvals")}
    till = {str(g) for g in grants if g.user == acls.principal(acls.TILL)}
    assert till == {"User:switchyard-pos WRITE topic t1.requests", "User:switchyard-pos WRITE topic t1.feedback"}
    governed_writers = {g.user for g in grants if g.name == "t1.governed" and g.operation == "write"}
    assert governed_writers == {acls.principal("governor"), acls.principal(FUSED)}


CLIENTS = {"Producer", "Consumer", "AdminClient"}
AIO_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer"}


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def test_every_kafka_client_in_services_takes_its_config_from_the_helpers() -> None:
    unsecured = []
    for path in (REPO_ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            called, where = _name(node.func), f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
            if called in CLIENTS and node.args:
                first = node.args[0]
                if not (isinstance(first, ast.Call) and _name(first.func).endswith("_config")):
                    unsecured.append(where)
            elif called in AIO_CLIENTS:
                spread = [k.value for k in node.keywords if k.arg is None]
                if not (spread and isinstance(spread[0], ast.Call) and _name(spread[0].func) == "aiokafka_config"):
                    unsecured.append(where)
            elif called == "App" and not any(k.arg == "broker_credentials" for k in node.keywords):
                unsecured.append(where)
    assert unsecured == []
