"""The registry client and the codec's Confluent wire format against an in-process registry that serves the
Confluent Schema Registry REST API as documented (no registry server can be installed from the package
registries this project reaches): ids from registration, schemas by id, foreign producers' older versions."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.settings import Settings
from services.wire.codec import SINGLE_OBJECT_MARKER, AvroCodec, confluent_header, wire_schema
from services.wire.errors import SchemaDefinitionError, UnknownSchemaIdError
from services.wire.models import Request
from services.wire.registry_client import (
    CONTENT_TYPE,
    RegistryClient,
    RegistryUnavailableError,
    SchemaRegistryError,
    codec_from_settings,
    value_subject,
)
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from tests.unit.wire_values import REQUEST, values_of, with_defaults

REGISTRY = SchemaRegistry.load(REPO_SCHEMAS_DIR)
_SUBJECT_VERSIONS = re.compile(r"^/subjects/([^/]+)/versions$")
_SCHEMA_BY_ID = re.compile(r"^/schemas/ids/([0-9]+)$")


class FakeSchemaRegistry:
    """What the documented endpoints promise: one global id per distinct schema (the same schema under
    another subject gets the same id), versions per subject, errors as {error_code, message}. Compatibility
    is NONE: Switchyard checks its own schemas (`make schemas-check`)."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.fail_next = 0
        self._ids_by_schema: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeSchemaRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def register(self, subject: str, text: str) -> tuple[int, dict[str, Any]]:
        try:
            normal = json.dumps(json.loads(text), sort_keys=True)
            parse_schema(json.loads(text))
        except Exception as error:
            return 422, {"error_code": 42201, "message": f"Invalid schema: {error}"}
        with self._lock:
            schema_id = self._ids_by_schema.setdefault(normal, len(self._ids_by_schema) + 1)
            self.schemas.setdefault(schema_id, text)
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
        return 200, {"id": schema_id}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self._failing():
                    return
                match = _SUBJECT_VERSIONS.match(self.path)
                if match is None:
                    self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                    return
                request = json.loads(body)
                if request.get("schemaType", "AVRO") != "AVRO":
                    self._answer(422, {"error_code": 42201, "message": "only AVRO here"})
                    return
                subject = httpx.URL(f"http://x/{match.group(1)}").path[1:]
                self._answer(*fake.register(subject, request["schema"]))

            def do_GET(self) -> None:
                if self._failing():
                    return
                match = _SCHEMA_BY_ID.match(self.path)
                if match is None and self.path == "/subjects":
                    self._answer(200, sorted(fake.subjects))
                elif match is None or int(match.group(1)) not in fake.schemas:
                    self._answer(404, {"error_code": 40403, "message": "Schema not found"})
                else:
                    self._answer(200, {"schema": fake.schemas[int(match.group(1))]})

            def _failing(self) -> bool:
                fake.requests.append((self.command, self.path, dict(self.headers)))
                if fake.fail_next <= 0:
                    return False
                fake.fail_next -= 1
                self._answer(503, {"error_code": 50003, "message": "Error while forwarding the request"})
                return True

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows failures, not every request."""

        return Handler


@pytest.fixture
def fake_registry() -> Iterator[FakeSchemaRegistry]:
    fake = FakeSchemaRegistry().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def confluent_codec() -> Iterator[AvroCodec]:
    fake = FakeSchemaRegistry().start()
    yield codec_from_settings(Settings(wire_format="confluent", schema_registry_url=fake.url), REGISTRY)
    fake.stop()


def _confluent_settings(fake: FakeSchemaRegistry, **overrides: Any) -> Settings:
    return Settings(wire_format="confluent", schema_registry_url=fake.url, **overrides)


def _avro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = BytesIO()
    schemaless_writer(buffer, wire_schema(schema), record)
    return buffer.getvalue()


def test_registering_returns_the_registry_id_and_the_id_serves_the_schema(fake_registry: FakeSchemaRegistry) -> None:
    schema = REGISTRY.entry("Request").schema
    with RegistryClient(fake_registry.url) as client:
        schema_id = client.register("requests-value", schema)
    with RegistryClient(fake_registry.url) as fresh:
        assert fresh.schema(schema_id) == schema
    assert fake_registry.subjects == {"requests-value": [schema_id]}


def test_requests_speak_the_schema_registry_media_type(fake_registry: FakeSchemaRegistry) -> None:
    with RegistryClient(fake_registry.url) as client:
        client.register("requests-value", REGISTRY.entry("Request").schema)

    method, path, headers = fake_registry.requests[0]
    assert (method, path) == ("POST", "/subjects/requests-value/versions")
    assert headers["Content-Type"] == CONTENT_TYPE
    assert headers["Accept"].startswith(CONTENT_TYPE)


def test_a_schema_registered_again_is_answered_from_the_cache(fake_registry: FakeSchemaRegistry) -> None:
    schema = REGISTRY.entry("Request").schema
    with RegistryClient(fake_registry.url) as client:
        first = client.register("requests-value", schema)
        again = client.register("requests-value", schema)
        assert client.schema(first) == schema

    assert first == again
    assert len(fake_registry.requests) == 1


def test_the_same_schema_under_two_subjects_has_one_id(fake_registry: FakeSchemaRegistry) -> None:
    schema = REGISTRY.entry("DeadLetter").schema
    with RegistryClient(fake_registry.url) as client:
        ids = {client.register(value_subject(topic), schema) for topic in ("dlq.router", "dlq.stitcher")}

    assert len(ids) == 1
    assert sorted(fake_registry.subjects) == ["dlq.router-value", "dlq.stitcher-value"]


def test_an_id_the_registry_does_not_hold_is_none(fake_registry: FakeSchemaRegistry) -> None:
    with RegistryClient(fake_registry.url) as client:
        assert client.schema(404) is None


def test_a_server_error_is_retried_before_giving_up(fake_registry: FakeSchemaRegistry) -> None:
    fake_registry.fail_next = 2
    with RegistryClient(fake_registry.url, attempts=3) as client:
        schema_id = client.register("requests-value", REGISTRY.entry("Request").schema)

    assert fake_registry.schemas[schema_id]
    assert len(fake_registry.requests) == 3


def test_a_registry_that_does_not_answer_is_named_with_the_setting_to_check(fake_registry: FakeSchemaRegistry) -> None:
    url = fake_registry.url
    fake_registry.stop()

    with (
        RegistryClient(url, attempts=1, timeout_s=1) as client,
        pytest.raises(RegistryUnavailableError, match="SWITCHYARD_SCHEMA_REGISTRY_URL"),
    ):
        client.schema(1)


def test_a_schema_the_registry_refuses_carries_its_error_code(fake_registry: FakeSchemaRegistry) -> None:
    with (
        RegistryClient(fake_registry.url) as client,
        pytest.raises(SchemaRegistryError, match="error 42201"),
    ):
        client.register("requests-value", {"type": "record", "name": "Broken", "fields": [{"name": "x"}]})


def test_the_default_settings_write_single_object_and_ask_no_registry() -> None:
    codec = codec_from_settings(Settings(), REGISTRY)

    assert codec.wire_format == "single_object"
    assert codec.encode("Request", REQUEST).startswith(SINGLE_OBJECT_MARKER)


def test_the_confluent_format_without_a_registry_url_is_refused_with_the_fix() -> None:
    with pytest.raises(SchemaRegistryError, match="SWITCHYARD_SCHEMA_REGISTRY_URL"):
        codec_from_settings(Settings(wire_format="confluent"), REGISTRY)


def test_the_confluent_setting_registers_topic_value_subjects_and_writes_their_ids(
    fake_registry: FakeSchemaRegistry,
) -> None:
    codec = codec_from_settings(_confluent_settings(fake_registry, topic_prefix="east."), REGISTRY)

    data = codec.encode("Request", REQUEST)
    request_id = fake_registry.subjects["east.requests-value"][0]
    assert codec.wire_format == "confluent"
    assert data[:5] == confluent_header(request_id)
    assert fake_registry.subjects["east.dlq.router-value"] == fake_registry.subjects["east.dlq.auditor-value"]
    # a nested record no topic carries gets a subject of its own name (RecordNameStrategy)
    assert "switchyard.Finding" in fake_registry.subjects


def test_the_codecs_of_one_process_register_the_schemas_once(fake_registry: FakeSchemaRegistry) -> None:
    first = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)
    asked = len(fake_registry.requests)
    second = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)

    assert len(fake_registry.requests) == asked
    assert second.encode("Request", REQUEST) == first.encode("Request", REQUEST)


def test_our_confluent_records_decode_without_asking_the_registry(fake_registry: FakeSchemaRegistry) -> None:
    codec = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)
    asked = len(fake_registry.requests)

    name, decoded = codec.decode(codec.encode("Request", REQUEST), reader="Request")

    assert name == "switchyard.Request"
    assert decoded == with_defaults(REQUEST, REGISTRY.entry("Request").schema)
    assert len(fake_registry.requests) == asked


@pytest.mark.parametrize("name", REGISTRY.names())
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_type_round_trips_in_the_confluent_wire_format(
    confluent_codec: AvroCodec, name: str, data: st.DataObject
) -> None:
    schema = REGISTRY.entry(name).schema
    record = data.draw(values_of(schema))

    encoded = confluent_codec.encode(name, record)

    assert encoded[:1] == b"\x00"
    assert confluent_codec.decode(encoded) == (name, with_defaults(record, schema))


def test_a_single_object_reader_with_the_registry_reads_confluent_records_too(
    fake_registry: FakeSchemaRegistry,
) -> None:
    writer = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)
    reader = codec_from_settings(Settings(schema_registry_url=fake_registry.url), REGISTRY)

    assert reader.wire_format == "single_object"
    assert reader.decode(writer.encode("Request", REQUEST))[0] == "switchyard.Request"
    assert reader.decode(reader.encode("Request", REQUEST))[0] == "switchyard.Request"


def test_a_foreign_producer_on_an_older_version_decodes_to_the_current_model(fake_registry: FakeSchemaRegistry) -> None:
    v1 = REGISTRY.versions("Request")[0]
    assert "locale" not in {field["name"] for field in v1.schema["fields"]}
    # what a Java or Go serializer does: register under the topic's subject, frame the body with the id
    foreign_id = httpx.post(
        f"{fake_registry.url}/subjects/requests-value/versions",
        json={"schema": json.dumps(v1.schema)},
        headers={"Content-Type": CONTENT_TYPE},
    ).json()["id"]
    data = confluent_header(foreign_id) + _avro_body(v1.schema, REQUEST)
    codec = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)

    name, decoded = codec.decode(data, reader="Request")

    assert name == "switchyard.Request"
    assert Request.model_validate(decoded) == Request.model_validate({**REQUEST, "locale": "en-US"})


def test_a_foreign_version_we_never_had_decodes_by_schema_resolution(fake_registry: FakeSchemaRegistry) -> None:
    schema = REGISTRY.entry("Request").schema
    foreign = {**schema, "fields": [*schema["fields"], {"name": "basket_total", "type": "double", "default": 0.0}]}
    with RegistryClient(fake_registry.url) as producer:
        foreign_id = producer.register("requests-value", foreign)
    data = confluent_header(foreign_id) + _avro_body(foreign, {**REQUEST, "attributes": {}, "basket_total": 9.5})
    codec = codec_from_settings(Settings(schema_registry_url=fake_registry.url), REGISTRY)

    _, decoded = codec.decode(data, reader="Request")

    assert "basket_total" not in decoded
    assert Request.model_validate(decoded).text == REQUEST["text"]


def test_a_foreign_consumer_reads_our_records_with_only_the_registry(fake_registry: FakeSchemaRegistry) -> None:
    codec = codec_from_settings(_confluent_settings(fake_registry), REGISTRY)
    data = codec.encode("Request", REQUEST)

    schema_id = int.from_bytes(data[1:5], "big")
    writer = json.loads(httpx.get(f"{fake_registry.url}/schemas/ids/{schema_id}").json()["schema"])
    decoded = schemaless_reader(BytesIO(data[5:]), parse_schema(writer))

    assert isinstance(decoded, dict)
    assert decoded["request_id"] == REQUEST["request_id"]
    assert decoded["locale"] == "en-US"


def test_an_id_unknown_to_the_registry_is_a_decode_error(fake_registry: FakeSchemaRegistry) -> None:
    codec = codec_from_settings(Settings(schema_registry_url=fake_registry.url), REGISTRY)

    with pytest.raises(UnknownSchemaIdError, match="schema id 77"):
        codec.decode(confluent_header(77) + b"\x02")


def test_writing_the_confluent_format_needs_an_id_for_every_current_schema() -> None:
    with pytest.raises(SchemaDefinitionError, match=r"no Confluent schema id for .*switchyard\.Routed"):
        AvroCodec(REGISTRY, schema_ids={"Request": 1})


def test_a_url_without_the_api_path_is_answered_with_where_apicurio_serves_it(
    fake_registry: FakeSchemaRegistry,
) -> None:
    with (
        RegistryClient(f"{fake_registry.url}/apis") as client,
        pytest.raises(SchemaRegistryError, match="/apis/ccompat/v7"),
    ):
        client.register("requests-value", REGISTRY.entry("Request").schema)
