"""Where every Switchyard process finds the infrastructure: one typed settings object, read from the
environment (prefix SWITCHYARD_), with defaults that match the embedded components `make up` starts."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Connection settings shared by every stage, tool and test."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="ignore")

    host: str = Field("127.0.0.1", description="address the embedded components listen on")
    var_dir: Path = Field(REPO_ROOT / "var", description="run-time state: broker logs, databases")
    schemas_dir: Path = Field(REPO_ROOT / "schemas", description="the Avro wire contract")
    topics_dir: Path = Field(REPO_ROOT / "topics", description="declarative topic definitions")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")

    clickhouse_url: str = Field(
        "http://127.0.0.1:8123",
        description="ClickHouse HTTP interface: a real server, or the embedded chDB owner from `make up`",
    )
    clickhouse_user: str = "default"
    clickhouse_password: str = ""
    clickhouse_database: str = "switchyard"
    chdb_path: Path | None = Field(
        None,
        description="chDB data directory owned by the embedded ClickHouse process (default var/clickhouse)",
    )

    weaviate_host: str = "127.0.0.1"
    weaviate_http_port: int = 8080
    weaviate_grpc_port: int = 50051

    def chdb_data_path(self) -> Path:
        return self.chdb_path or self.var_dir / "clickhouse" / "data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
