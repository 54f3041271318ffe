"""Where every Switchyard process finds the infrastructure: one typed settings object, read from the
environment (prefix SWITCHYARD_), with defaults that match the embedded components `make up` starts.

Every environment variable Switchyard reads is a field here, also those only infra/*.sh reads, so that
`python -m services.settings table` writes the whole configuration reference (docs/configuration.md)."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# The declarative data (schemas/, topics/, routes/, policies/, providers/, knowledge/, infra/clickhouse/) sits beside
# services/ in a checkout; an installed wheel carries it inside the package, as services/_data (pyproject.toml), and
# keeps its run-time state in ./var of the directory it starts in.
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "schemas").is_dir()
DATA_ROOT = REPO_ROOT if IN_CHECKOUT else Path(__file__).resolve().parent / "_data"
STATE_ROOT = REPO_ROOT if IN_CHECKOUT else Path.cwd()


class Settings(BaseSettings):
    """Connection settings shared by every stage, tool and test."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="address the embedded components listen on")
    var_dir: Path = Field(
        STATE_ROOT / "var",
        validation_alias=AliasChoices("SWITCHYARD_VAR_DIR", "SWITCHYARD_VAR"),
        description="run-time state: broker logs, chDB and Weaviate data, secrets, trained models; SWITCHYARD_VAR "
        "is the name the Makefile and infra/ set, and SWITCHYARD_VAR_DIR, where set, wins in both",
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "switchyard",
        validation_alias=AliasChoices("SWITCHYARD_CACHE"),
        description="builds kept between runs: Kafka's jars, the Weaviate and kubeconform binaries, the "
        "Kubernetes and KEDA schemas",
        json_schema_extra={"shown_default": "$XDG_CACHE_HOME/switchyard, else ~/.cache/switchyard"},
    )
    log_level: str = Field("INFO", description="level of the JSON log lines of a process (DEBUG, INFO, WARNING)")
    replica: str | None = Field(
        None,
        description="replica id of a process, unique per running copy; it names the stage's transactional id "
        "(default: the host name; `switchyard run` without --replica: 0)",
    )
    commit_max_records: int = Field(
        200,
        ge=1,
        description="group commit: under load a stage's transaction waits for this many finished records, or "
        "SWITCHYARD_COMMIT_LINGER_MS, whichever comes first (idle, it commits at once)",
    )
    commit_linger_ms: float = Field(
        2.0,
        ge=0.0,
        description="group commit: the most a stage's transaction waits under load for more finished records "
        "(make bench-runtime measures the trade: docs/performance.md)",
    )
    schemas_dir: Path = Field(DATA_ROOT / "schemas", description="the Avro wire contract")
    topics_dir: Path = Field(DATA_ROOT / "topics", description="declarative topic definitions")
    route_table: Path = Field(
        DATA_ROOT / "routes" / "route_table.yaml", description="the router's route table, reloaded when it changes"
    )

    policies: Path = Field(
        DATA_ROOT / "policies", description="policy rule files (*.yaml) of the governor and the output guard"
    )
    pii_vault_key_file: Path | None = Field(
        None, description="the PII vault's key ring (default var/secrets/pii_vault.key, 0600, made on first use)"
    )
    pii_vault_ttl_s: int = Field(86_400, description="how long a request's PII mapping can be restored")
    approval_ttl_s: int = Field(
        86_400,
        gt=0,
        le=14 * 86_400,  # approvals.state keeps decided states 30 days: any later decision is past the TTL anyway
        description="how long an escalated request waits for a manager: a decision that arrives later is refused "
        "as expired, and the request stays held (at most 14 days)",
    )
    pii_ner: bool = Field(True, description="spaCy NER for names beside the pattern recognizers (False: patterns only)")
    output_toxicity: bool = Field(
        True,
        description="score every model answer for toxicity: a char n-gram model decides the answers it is sure are "
        "clean (under 0.1 ms of CPU), the MiniLM classifier the rest (about 20 ms on 2 cores); off: the output "
        "guard's commitment, stock and PII checks still run",
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    kafka_port: int = Field(9092, description="port of the embedded broker (infra/kafka/kafka.sh)")
    kafka_controller_port: int = Field(9093, description="KRaft controller port of the embedded broker")
    kafka_heap: str = Field("768m", description="Java heap of the embedded broker")
    kafka_sasl_port: int = Field(9094, description="SASL_SSL (SCRAM-SHA-512) listener port of the embedded broker")
    kafka_plaintext: bool = Field(
        True,
        description="keep the embedded broker's loopback PLAINTEXT listener, whose clients are super users "
        "(a laptop only; false: SASL_SSL alone)",
    )
    topic_prefix: str = Field(
        "", description="prepended to every topic and consumer group name: one cluster, several isolated chains"
    )
    wire_format: Literal["single_object", "confluent"] = Field(
        "single_object",
        description="how records are written: Avro single-object encoding (C3 01 + schema fingerprint), or the "
        "Confluent wire format (0 + schema id from schema_registry_url) that other languages' serializers read; "
        "both are always read",
    )
    schema_registry_url: str | None = Field(
        None,
        description="a Confluent Schema Registry REST API (Confluent, Karapace, Apicurio's /apis/ccompat/v7): with "
        "it, Confluent wire-format records are read; wire_format confluent needs it",
    )
    schema_registry_timeout_s: float = Field(5.0, gt=0, description="per request to the schema registry")

    # --- Kafka client security: every Kafka client (confluent-kafka, aiokafka, faust) takes these through
    # services.runtime.kafka_clients; `make up` starts the dev broker with a SASL_SSL listener beside PLAINTEXT
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="PLAINTEXT (the dev broker's loopback listener, a laptop) or SASL_SSL (SCRAM over TLS; point "
        "kafka_bootstrap at that listener: 127.0.0.1:9094 on the dev broker)",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism of every Kafka client on a SASL_SSL listener"
    )
    kafka_username: str | None = Field(
        None,
        description="the SASL principal; unset: `switchyard-<process>` for a process run by `switchyard run`, the "
        "admin principal for tools",
    )
    kafka_password_file: Path | None = Field(
        None, description="file holding the SASL password (default var/secrets/kafka/<username>.password, 0600)"
    )
    kafka_ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) that signed the broker's certificate (default var/secrets/kafka/ca.pem)",
    )

    clickhouse_url: str = Field(
        "http://127.0.0.1:8123",
        description="ClickHouse HTTP interface: the embedded chDB owner from `make up`, or another URL for an "
        "external server",
    )
    clickhouse_port: int = Field(
        8123, description="port the embedded chDB owner serves (infra/clickhouse/clickhouse.sh)"
    )
    clickhouse_server_args: str = Field(
        "",
        description="options of the embedded ClickHouse server: --allow-host NAME, --allow-origin, "
        "--allow-external-access, --max-execution-time S (`python -m services.dev.clickhouse_http --help`)",
    )
    clickhouse_grace: int = Field(
        30, description="seconds the embedded ClickHouse server gets to finish its queries when it is stopped"
    )
    clickhouse_user: str = Field("default", description="ClickHouse user every client sends")
    clickhouse_password: str = Field(
        "",
        repr=False,
        description="ClickHouse password; when SWITCHYARD_CLICKHOUSE_PASSWORD is unset (not merely empty), the content "
        "of clickhouse_password_file, which `make up` writes for the embedded server",
    )
    clickhouse_password_file: Path | None = Field(
        None, description="file holding the ClickHouse password (default var/secrets/clickhouse.password, mode 0600)"
    )
    clickhouse_allow_no_password: bool = Field(
        False,
        description="let the embedded ClickHouse serve without a password, for a laptop only: without it, it refuses "
        "to start with none",
    )
    clickhouse_database: str = Field("switchyard", description="database of every Switchyard table")
    chdb_path: Path | None = Field(
        None,
        description="chDB data directory owned by the embedded ClickHouse process (default var/clickhouse/data)",
    )

    weaviate_host: str = Field("127.0.0.1", description="Weaviate's host")
    weaviate_http_port: int = Field(8080, description="Weaviate's HTTP port")
    weaviate_grpc_port: int = Field(50051, description="Weaviate's gRPC port")
    weaviate_version: str = Field(
        "1.35.2", description="Weaviate release infra/weaviate/weaviate.sh builds from the Go module proxy"
    )
    weaviate_memlimit: str = Field("1GiB", description="GOMEMLIMIT of the embedded Weaviate")
    weaviate_gossip_port: int = Field(7946, description="cluster gossip port of the embedded Weaviate")
    weaviate_data_port: int = Field(7947, description="cluster data port of the embedded Weaviate")
    weaviate_raft_port: int = Field(8300, description="Raft port of the embedded Weaviate")
    weaviate_raft_rpc_port: int = Field(8301, description="Raft internal RPC port of the embedded Weaviate")
    weaviate_api_key: SecretStr | None = Field(
        None,
        description="API key presented to Weaviate (default: var/secrets/weaviate.key, which "
        "infra/weaviate/weaviate.sh makes on its first start; none: anonymous access)",
    )

    dashboard_port: int = Field(9110, description="port of the monitoring dashboard (`switchyard dashboard`)")
    dashboard_token: SecretStr | None = Field(
        None,
        description="bearer token of the dashboard, 16 characters or more (default: var/secrets/dashboard.token, made "
        "on the dashboard's first start, mode 0600); listening beyond the loopback needs it set",
    )
    dashboard_allowed_hosts: list[str] = Field(
        [],
        description="host names the dashboard answers besides the loopback and its listen address, e.g. its "
        "Ingress host (other Host headers get 421: DNS rebinding)",
    )

    model_registry_dir: Path | None = Field(
        None,
        description="the learning loop's model registry (default var/models/registry), shared by the router, "
        "the answerer and the learning process",
    )
    telemetry_flush_s: float = Field(
        1.0,
        gt=0,
        description="the longest the telemetry writer buffers before inserting into ClickHouse: the delay before "
        "monitoring and audit rows are queryable (the approvals process looks an escalated request up there); 5 s "
        "cut chDB's CPU per request from about 20 to 7 ms in make bench",
    )
    telemetry_max_future_hours: float = Field(
        24.0,
        gt=0,
        description="how far ahead of the telemetry writer's clock a row's event time may be (a request's or a "
        "feedback's created_at, chosen by the client); a row further ahead, or older than its table's TTL, is not "
        "inserted: its record goes to dlq.telemetry with the field and value",
    )
    audit_checkpoint_records: int = Field(
        100,
        gt=0,
        description="the auditor signs a chain's head (audit.checkpoints) at least every this many of its records",
    )
    audit_checkpoint_s: float = Field(
        30.0,
        ge=0,
        description="and on a chain's first record this long after its last checkpoint (so a quiet store's head is "
        "signed with nearly every record); a chain's first record after each partition assignment is always signed",
    )
    learning_check_every_s: float = Field(
        30.0, description="how often the learning process checks promoted models' live metrics (and shadows)"
    )
    learning_max_bad_rate: float = Field(
        0.2, description="share of reviewed live work found wrong above which a promoted model is rolled back"
    )
    learning_min_reviewed: int = Field(10, description="reviewed live requests needed before judging a promotion")
    learning_auto_promote: bool = Field(
        False,
        description="promote a candidate in shadow by itself once it beats the incumbent by learning_margin on its "
        "eval split and in shadow (off: `switchyard promote` does it)",
    )
    learning_margin: float = Field(0.05, description="accuracy a candidate must add to be promoted automatically")

    model_provider: str = Field("local_gguf", description="answerer's model: local_gguf, or openai (any compatible)")
    model_base_url: str = Field("http://127.0.0.1:8199/v1", description="OpenAI-compatible endpoint, for openai")
    model_name: str = Field("gemma3-270m", description="model name sent to the provider")
    model_api_key_env: str | None = Field(None, description="NAME of the env var holding the API key, never the key")
    model_timeout_s: float = Field(30.0, description="per call to the openai provider")
    providers_file: Path | None = Field(
        None,
        description="the answerer's providers (e.g. providers/providers.yaml: endpoints, limits, breakers, prices, "
        "fallbacks); none: one provider from the model_* settings",
    )
    model_threads: int = Field(1, description="CPU threads for the local model; the rest stay with the broker")

    health_window_s: float = Field(30.0, description="provider health (services/health): the sliding window")
    health_step_s: float = Field(5.0, description="provider health: the window's step (its bucket length)")
    health_p95_limit_ms: float = Field(1500.0, description="provider health: p95 latency above which it is degraded")
    health_error_rate_limit: float = Field(0.5, description="provider health: error rate above which it is degraded")
    health_min_calls: int = Field(5, description="provider health: calls in a window before it is judged")

    answer_outage_deadline_s: float = Field(
        15.0,
        ge=0,
        description="how long the answerer retries a request no provider answers before it releases the hand-off "
        "to staff (at once when every provider's circuit is open)",
    )
    max_request_chars: int = Field(
        32_000,
        ge=1_000,
        description="longest request text the router takes; a longer one is dead-lettered with its length, since "
        "the records carrying it through the chain would outgrow a stage's record limit (the gateway refuses more "
        "than 8,000 with a 400)",
    )
    answer_max_prompt_chars: int = Field(
        6_000, ge=256, description="a prompt every provider refused is cut to this many characters and asked again"
    )
    gateway_models: list[str] = Field(
        ["switchyard"], description="model names the HTTP gateway answers to (the chain picks the route and model)"
    )
    gateway_timeout_s: float = Field(
        30.0, gt=0, description="how long a chat completion waits for its answer before the gateway answers 202"
    )
    gateway_produce_timeout_s: float = Field(10.0, gt=0, description="how long Kafka may take to accept a request")
    gateway_max_body_bytes: int = Field(65_536, description="largest request body the gateway reads (413 above)")
    gateway_max_pending: int = Field(
        5_000, description="answers one gateway replica waits on at once; beyond it new requests get 503"
    )
    gateway_answers_kept: int = Field(
        50_000, description="recent answers a replica keeps for GET /v1/requests/{id} and Idempotency-Key retries"
    )
    gateway_answers_kept_bytes: int = Field(
        128 << 20,
        ge=0,
        description="the most memory those answers take (128 MiB), about 23 KB each with four passages in the "
        "prompt (some 5,800 of them); beyond either bound the oldest go, and GET /v1/requests/{id} reads them from "
        "ClickHouse",
    )
    gateway_requests_per_minute: int = Field(600, description="requests a minute per store, for keys that set none")
    gateway_tokens_per_day: int = Field(2_000_000, description="model tokens per store per UTC day, by default")
    gateway_cost_per_day_usd: float = Field(50.0, description="model cost per store per UTC day, by default")
    gateway_budget_refresh_s: float = Field(
        10.0, gt=0, description="how often the gateway re-reads today's spending per store from ClickHouse"
    )

    kubeconform_version: str = Field(
        "0.8.0", description="kubeconform release `make validate-manifests` builds (infra/deploy/kubeconform.sh)"
    )

    @field_validator("providers_file", mode="before")
    @classmethod
    def _empty_providers_file_is_none(cls, value: object) -> object:
        """SWITCHYARD_PROVIDERS_FILE set but empty means no providers file, as it always has."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _weaviate_key_file(self) -> Settings:
        """Without SWITCHYARD_WEAVIATE_API_KEY, the key weaviate.sh made for the Weaviate it started, if any."""
        path = self.var_dir / "secrets" / "weaviate.key"
        if self.weaviate_api_key is None and path.is_file():
            key = path.read_text(encoding="utf-8").strip()
            self.weaviate_api_key = SecretStr(key) if key else None
        return self

    def topic(self, name: str) -> str:
        """The broker-side name of a topic from topics/ (and of a consumer group)."""
        return f"{self.topic_prefix}{name}"

    def model_provider_config(self) -> dict[str, object]:
        """The answerer's provider, in the form services.answerer.providers.provider_from_config reads."""
        if self.model_provider == "local_gguf":
            return {"kind": "local_gguf", "model": self.model_name, "n_threads": self.model_threads}
        config: dict[str, object] = {
            "kind": self.model_provider,
            "base_url": self.model_base_url,
            "model": self.model_name,
            "timeout_s": self.model_timeout_s,
        }
        if self.model_api_key_env:
            config["api_key_env"] = self.model_api_key_env
        return config

    def kafka_principal(self) -> str:
        return self.kafka_username or "admin"

    def kafka_password_path(self) -> Path:
        return self.kafka_password_file or self.var_dir / "secrets" / "kafka" / f"{self.kafka_principal()}.password"

    def kafka_ca_path(self) -> Path:
        return self.kafka_ca_file or self.var_dir / "secrets" / "kafka" / "ca.pem"

    def chdb_data_path(self) -> Path:
        return self.chdb_path or self.var_dir / "clickhouse" / "data"

    def clickhouse_password_path(self) -> Path:
        return self.clickhouse_password_file or self.var_dir / "secrets" / "clickhouse.password"

    @model_validator(mode="after")
    def _clickhouse_password_from_file(self) -> Settings:
        """An explicit password (env, even empty, or argument) wins; otherwise the file's, when there is one."""
        if "clickhouse_password" not in self.model_fields_set and self.clickhouse_password_path().is_file():
            self.clickhouse_password = read_secret(self.clickhouse_password_path())
        return self


def read_secret(path: Path) -> str:
    """A secret kept in a file, without the line end an editor or `echo` adds."""
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as ex:
        raise ValueError(f"cannot read the secret in {path}: {ex.strerror}; fix its permissions or remove it") from ex


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


CONFIGURATION_DOC = REPO_ROOT / "docs" / "configuration.md"
TABLE_START = "<!-- settings table: generated by `python -m services.settings table --write`; do not edit -->"
TABLE_END = "<!-- end of settings table -->"


def env_names(name: str) -> list[str]:
    """The environment variables a field is read from, the documented one first."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"SWITCHYARD_{name.upper()}"]


def shown_default(name: str) -> str:
    """A field's default as the configuration table shows it: paths relative to the repository."""
    field = Settings.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.get_default()
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path) and value.is_relative_to(REPO_ROOT):
        return f"./{value.relative_to(REPO_ROOT)}"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return str(value) if value != "" else '""'


def configuration_table() -> str:
    """Every setting as a markdown table row: variable, default, description."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        first, *others = env_names(name)
        variable = f"`{first}`" + "".join(f", `{other}`" for other in others)
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| {variable} | `{shown_default(name)}` | {description} |")
    return "\n".join(rows) + "\n"


def with_table(document: str) -> str:
    """The configuration document with its generated table replaced by the current one."""
    head, start, rest = document.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"{CONFIGURATION_DOC}: the markers {TABLE_START!r} and {TABLE_END!r} are missing")
    return f"{head}{TABLE_START}\n\n{configuration_table()}\n{TABLE_END}{tail}"


def main(argv: list[str]) -> int:
    """`python -m services.settings table [--write]`: print the configuration table, or write it into the doc."""
    if argv[:1] != ["table"] or argv[1:] not in ([], ["--write"]):
        print("usage: python -m services.settings table [--write]", file=sys.stderr)
        return 2
    if argv[1:] == ["--write"]:
        CONFIGURATION_DOC.write_text(with_table(CONFIGURATION_DOC.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote the settings table into {CONFIGURATION_DOC.relative_to(REPO_ROOT)}")
        return 0
    print(configuration_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
