"""Weaviate behind its API key, as infra/weaviate/weaviate.sh runs it. A Weaviate of this module's own (free ports,
a temporary state directory) makes its key file once (mode 0600), refuses anonymous and wrong-key clients over REST
and gRPC, answers connect() with the key the settings read from that file, keeps its readiness probe open, wants the
cluster password on its cluster data port and runs no profiler. And the Weaviate `make up` started refuses
anonymous access."""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from pydantic import SecretStr
from weaviate.classes.config import Configure, DataType, Property
from weaviate.exceptions import UnexpectedStatusCodeError
from weaviate.proto.v1 import search_get_pb2, weaviate_pb2_grpc

from services.launcher import free_port
from services.settings import REPO_ROOT, Settings
from services.stitcher.knowledge import connect

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "infra" / "weaviate" / "weaviate.sh"
PORTS = ("HTTP", "GRPC", "GOSSIP", "DATA", "RAFT", "RAFT_RPC", "PROFILER")


@dataclass(frozen=True)
class OwnWeaviate:
    var_dir: Path
    ports: dict[str, int]

    @property
    def key(self) -> str:
        return (self.var_dir / "secrets" / "weaviate.key").read_text().strip()

    def settings(self) -> Settings:
        return Settings.model_validate(
            {
                "var_dir": self.var_dir,
                "weaviate_host": "127.0.0.1",
                "weaviate_http_port": self.ports["HTTP"],
                "weaviate_grpc_port": self.ports["GRPC"],
            }
        )


def status(url: str, authorization: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(scope="module")
def own_weaviate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnWeaviate]:
    var_dir = tmp_path_factory.mktemp("weaviate-auth")
    ports: dict[str, int] = {}
    while len(set(ports.values())) < len(PORTS):
        ports = {name: free_port() for name in PORTS}
    env = {
        key: value for key, value in os.environ.items() if key not in {"SWITCHYARD_WEAVIATE_API_KEY", "SWITCHYARD_VAR"}
    }
    env |= {f"SWITCHYARD_WEAVIATE_{name}_PORT": str(port) for name, port in ports.items()}
    env |= {"SWITCHYARD_VAR": str(var_dir), "SWITCHYARD_HOST": "127.0.0.1", "PYTHON": sys.executable}
    env["GO_PROFILING_PORT"] = str(ports["PROFILER"])  # even a profiler port set stays closed: profiling is off
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0, started.stderr
    try:
        yield OwnWeaviate(var_dir, ports)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)


def test_the_key_is_made_once_into_a_file_only_its_owner_reads(own_weaviate: OwnWeaviate) -> None:
    path = own_weaviate.var_dir / "secrets" / "weaviate.key"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(own_weaviate.key) == 64 and int(own_weaviate.key, 16)
    assert own_weaviate.settings().weaviate_api_key == SecretStr(own_weaviate.key)


def test_anonymous_and_wrong_key_requests_are_refused_and_the_readiness_probe_stays_open(
    own_weaviate: OwnWeaviate,
) -> None:
    base = f"http://127.0.0.1:{own_weaviate.ports['HTTP']}/v1"

    assert status(f"{base}/schema") == 401
    assert status(f"{base}/meta") == 401
    assert status(f"{base}/schema", "Bearer not-the-key") == 401
    assert status(f"{base}/schema", f"Bearer {own_weaviate.key}") == 200
    assert status(f"{base}/.well-known/ready") == 200


def test_connect_with_the_key_from_the_settings_writes_and_searches_over_grpc(own_weaviate: OwnWeaviate) -> None:
    settings = own_weaviate.settings()
    client = connect(
        settings.weaviate_host,
        settings.weaviate_http_port,
        settings.weaviate_grpc_port,
        api_key=settings.weaviate_api_key,
    )
    name = f"ItAuth{uuid.uuid4().hex[:8]}"
    try:
        passages = client.collections.create(
            name,
            vector_config=Configure.Vectors.self_provided(),
            properties=[Property(name="text", data_type=DataType.TEXT)],
        )
        passages.data.insert({"text": "returns within 30 days"}, vector=[0.1, 0.2, 0.3])
        found = passages.query.near_vector([0.1, 0.2, 0.3], limit=1)
        assert [passage.properties["text"] for passage in found.objects] == ["returns within 30 days"]
    finally:
        client.collections.delete(name)
        client.close()


@pytest.mark.parametrize("api_key", [None, SecretStr("not-the-key")], ids=["no key", "wrong key"])
def test_connect_without_the_key_or_with_a_wrong_one_is_refused(
    own_weaviate: OwnWeaviate, api_key: SecretStr | None
) -> None:
    with pytest.raises(UnexpectedStatusCodeError, match="401"):
        connect("127.0.0.1", own_weaviate.ports["HTTP"], own_weaviate.ports["GRPC"], api_key=api_key)


def test_grpc_without_the_key_is_refused(own_weaviate: OwnWeaviate) -> None:
    """The gRPC port listens on every interface (Weaviate binds it so): the key is what closes it."""
    with grpc.insecure_channel(f"127.0.0.1:{own_weaviate.ports['GRPC']}") as channel:
        stub = weaviate_pb2_grpc.WeaviateStub(channel)  # type: ignore[no-untyped-call]
        request = search_get_pb2.SearchRequest(collection="Anything", limit=1)
        with pytest.raises(grpc.RpcError, match="unauthorized"):
            stub.Search(request, timeout=5)


def test_the_cluster_data_port_wants_the_cluster_password(own_weaviate: OwnWeaviate) -> None:
    """It listens on every interface and serves objects without the API key."""
    url = f"http://127.0.0.1:{own_weaviate.ports['DATA']}/nodes/status"
    password = base64.b64encode(f"switchyard-cluster:{own_weaviate.key}".encode()).decode()

    assert status(url) == 401
    assert status(url, f"Basic {password}") == 200


def test_no_profiler_listens(own_weaviate: OwnWeaviate) -> None:
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", own_weaviate.ports["PROFILER"])):
        pass


def test_the_settings_read_the_key_file_unless_the_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHYARD_WEAVIATE_API_KEY", raising=False)
    assert Settings.model_validate({"var_dir": tmp_path}).weaviate_api_key is None
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "weaviate.key").write_text("from-the-file\n")
    assert Settings.model_validate({"var_dir": tmp_path}).weaviate_api_key == SecretStr("from-the-file")
    monkeypatch.setenv("SWITCHYARD_WEAVIATE_API_KEY", "from-the-variable")
    assert Settings.model_validate({"var_dir": tmp_path}).weaviate_api_key == SecretStr("from-the-variable")


def test_the_weaviate_make_up_started_refuses_anonymous_access(settings: Settings, weaviate_url: str) -> None:
    assert status(f"{weaviate_url}/v1/schema") == 401
    assert settings.weaviate_api_key is not None, "no key: SWITCHYARD_WEAVIATE_API_KEY or var/secrets/weaviate.key"
    assert status(f"{weaviate_url}/v1/schema", f"Bearer {settings.weaviate_api_key.get_secret_value()}") == 200
