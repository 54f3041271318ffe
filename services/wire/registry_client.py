"""A client of the Confluent Schema Registry REST API (Confluent, Karapace, Apicurio's /apis/ccompat/v7): it
registers Switchyard's current schemas under their topics' subjects and looks writer schemas up by id, so the
codec can write and read the Confluent wire format that other languages' Kafka serializers use."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from services.infra.topic_specs import TopicSpec, load_topics
from services.settings import Settings
from services.wire.codec import AvroCodec
from services.wire.errors import DecodeError, WireContractError
from services.wire.schema_registry import Schema, SchemaRegistry, full_name

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# what the registry may answer in, preferred first, as Confluent's own clients ask
ACCEPT = f"{CONTENT_TYPE}, application/vnd.schemaregistry+json; q=0.9, application/json; q=0.5"
_RETRY_BACKOFF_S = 0.1


class SchemaRegistryError(WireContractError):
    """The schema registry refused a request; the message carries its error code and what to do."""


class RegistryUnavailableError(SchemaRegistryError):
    """The schema registry did not answer, or answered with a server error, on every attempt."""


def value_subject(topic: str) -> str:
    """The subject of a topic's value schema under Confluent's default TopicNameStrategy."""
    return f"{topic}-value"


def value_subjects(topics: Sequence[TopicSpec], topic_name: Callable[[str], str] = str) -> dict[str, list[str]]:
    """Record full name -> the value subjects of the topics that carry it; `topic_name` maps a topic of topics/
    to its broker-side name (Settings.topic adds the prefix)."""
    subjects: dict[str, list[str]] = {}
    for spec in topics:
        subjects.setdefault(full_name(spec.value_schema), []).append(value_subject(topic_name(spec.name)))
    return subjects


class RegistryClient:
    """Registers schemas and fetches them by id, caching both: a subject's id for a schema and an id's schema
    never change in a registry. Calls are blocking (httpx.Client): registration runs once at start-up, and a
    lookup only on the first record of an id this process has not seen."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._attempts = max(1, attempts)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers={"Accept": ACCEPT}, transport=transport
        )
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}

    def register(self, subject: str, schema: Schema) -> int:
        """Register `schema` (Avro, JSON data) under `subject` and return its id; registering the same schema
        again returns the same id without a new version."""
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        known = self._ids.get((subject, text))
        if known is not None:
            return known
        body = {"schema": text, "schemaType": "AVRO"}
        answer = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", subject, body)
        schema_id = _int_field(answer, "id", subject)
        self._ids[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, schema)
        return schema_id

    def schema(self, schema_id: int) -> Schema | None:
        """The Avro schema registered under `schema_id`, or None when the registry has no such id; this is the
        codec's `schema_id_lookup`."""
        known = self._schemas.get(schema_id)
        if known is not None:
            return known
        answer = self._request("GET", f"/schemas/ids/{schema_id}", f"schema id {schema_id}", missing_ok=True)
        if answer is None:
            return None
        kind = answer.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise DecodeError(f"schema id {schema_id} is a {kind} schema, not Avro; Switchyard records are Avro")
        if not isinstance(answer.get("schema"), str):
            raise SchemaRegistryError(f"{self.base_url} answered schema id {schema_id} without its schema text")
        schema: Schema = json.loads(answer["schema"])
        self._schemas[schema_id] = schema
        return schema

    def register_current(self, registry: SchemaRegistry, subjects: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """Register every current schema under its subjects (`value_subjects`); a record no topic carries (a
        nested type) is registered under its full name, as RecordNameStrategy names it. Returns record full
        name -> schema id, what the codec needs to write the Confluent wire format."""
        ids: dict[str, int] = {}
        for name in registry.names():
            schema = registry.entry(name).schema
            for subject in subjects.get(name) or [name]:
                ids.setdefault(name, self.register(subject, schema))
        return ids

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, what: str, body: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        response = self._send(method, path, what, body)
        if response.status_code == 404 and missing_ok:
            return None
        if response.is_error:
            raise SchemaRegistryError(_refusal(self.base_url, what, response))
        answer = response.json()
        if not isinstance(answer, dict):
            raise SchemaRegistryError(f"{self.base_url}{path} answered {answer!r}, not a JSON object")
        return answer

    def _send(self, method: str, path: str, what: str, body: dict[str, Any] | None) -> httpx.Response:
        content = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": CONTENT_TYPE}
        reason = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(_RETRY_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
                continue
            if response.status_code < 500:
                return response
            reason = f"HTTP {response.status_code}: {response.text[:200]}"
        raise RegistryUnavailableError(
            f"schema registry {self.base_url} did not serve {what} after {self._attempts} attempts ({reason}); "
            "check that it runs and that SWITCHYARD_SCHEMA_REGISTRY_URL points at its Confluent-compatible API"
        )


def _int_field(answer: dict[str, Any] | None, field: str, what: str) -> int:
    value = (answer or {}).get(field)
    if not isinstance(value, int):
        raise SchemaRegistryError(f"registering {what}: the registry answered {answer!r}, without an integer {field!r}")
    return value


def _refusal(base_url: str, what: str, response: httpx.Response) -> str:
    try:
        error = response.json()
    except ValueError:
        error = {}
    code = error.get("error_code", response.status_code) if isinstance(error, dict) else response.status_code
    message = error.get("message", response.text[:200]) if isinstance(error, dict) else response.text[:200]
    hint = {
        409: "the schema is incompatible with the subject's earlier versions: check `make schemas-check` and the "
        "subject's compatibility level",
        422: "the registry rejects the schema as invalid Avro",
        401: "the registry wants credentials",
        403: "the registry refuses this client",
        404: "check the URL's path (Apicurio serves this API under /apis/ccompat/v7)",
    }.get(response.status_code, "see the registry's log")
    return f"schema registry {base_url} refused {what}: error {code}: {message}; {hint}"


_SHARED: dict[tuple[str, float], RegistryClient] = {}


def shared_client(url: str, timeout_s: float) -> RegistryClient:
    """One client per registry in a process, so the several codecs a process builds share its caches and
    register the schemas once."""
    key = (url.rstrip("/"), timeout_s)
    client = _SHARED.get(key)
    if client is None:
        client = _SHARED[key] = RegistryClient(url, timeout_s=timeout_s)
    return client


def codec_from_settings(settings: Settings, registry: SchemaRegistry | None = None) -> AvroCodec:
    """The codec a process should use: single-object encoding by default; with SWITCHYARD_SCHEMA_REGISTRY_URL
    it also reads the Confluent wire format, and with SWITCHYARD_WIRE_FORMAT=confluent it registers the current
    schemas (TopicNameStrategy subjects) and writes that format."""
    registry = registry or SchemaRegistry.load(settings.schemas_dir)
    url = settings.schema_registry_url
    if url is None:
        if settings.wire_format == "confluent":
            raise SchemaRegistryError(
                "SWITCHYARD_WIRE_FORMAT=confluent needs SWITCHYARD_SCHEMA_REGISTRY_URL, the registry that assigns "
                "schema ids (e.g. http://127.0.0.1:8081)"
            )
        return AvroCodec(registry)
    client = shared_client(url, settings.schema_registry_timeout_s)
    if settings.wire_format == "single_object":
        return AvroCodec(registry, schema_id_lookup=client.schema)
    subjects = value_subjects(load_topics(settings.topics_dir, registry), settings.topic)
    schema_ids = client.register_current(registry, subjects)
    return AvroCodec(registry, schema_id_lookup=client.schema, schema_ids=schema_ids)


def main(argv: list[str] | None = None) -> int:
    """`python -m services.wire.registry_client register [--url URL]`: register the current schemas with
    the schema registry (as a process with SWITCHYARD_WIRE_FORMAT=confluent does on start) and print each
    record's subjects and id."""
    import argparse

    settings = Settings()
    parser = argparse.ArgumentParser(prog="registry_client", description=main.__doc__)
    parser.add_argument("action", choices=["register"])
    parser.add_argument("--url", default=settings.schema_registry_url, help="default SWITCHYARD_SCHEMA_REGISTRY_URL")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no registry: pass --url or set SWITCHYARD_SCHEMA_REGISTRY_URL")
    registry = SchemaRegistry.load(settings.schemas_dir)
    subjects = value_subjects(load_topics(settings.topics_dir, registry), settings.topic)
    with RegistryClient(args.url, timeout_s=settings.schema_registry_timeout_s) as client:
        ids = client.register_current(registry, subjects)
    for name, schema_id in ids.items():
        print(json.dumps({"record": name, "id": schema_id, "subjects": subjects.get(name) or [name]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
