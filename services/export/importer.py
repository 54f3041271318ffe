"""`switchyard import BUNDLE --into DIR`: check a bundle, then lay it out as a Switchyard tree where `make up` runs.

Checks, in order, each refusal naming the file, model or record and why:
1. the manifest: format, the bundle hash (BUNDLE.sha256, and --expect-hash when the operator pinned one);
2. every file: a path that stays inside the bundle (relative, no `..`, no symbolic link on the way), present, same
   sha256, nothing unlisted; a missing model file is reported as a missing model;
3. versions: the Switchyard major version, each model's card against its weights, each declared schema fingerprint,
   topic, route-table and policy version against the files that carry them;
4. schema compatibility: each bundled record against the target's schemas and their history, both directions (the
   records on the running topics were written with those), each topic's record name, and, with --bootstrap, the
   running broker's topics (partitions cannot shrink, a replication factor cannot change in place).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from services.export.bundle import FORMAT, HASH_FILE, MANIFEST, sha256_file, switchyard_version
from services.export.describe import (
    deployed_models,
    model_versions,
    policy_version,
    route_table_version,
    schema_versions,
)
from services.runtime.kafka_clients import confluent_config
from services.wire.compatibility import check_candidate
from services.wire.schema_registry import SchemaRegistry


class BundleRefused(ValueError):
    """The bundle is not imported; `problems` says which file, model or record and why."""

    def __init__(self, bundle: Path, problems: list[str]) -> None:
        self.bundle = bundle
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"bundle {bundle} refused ({len(problems)} problem(s)):\n{listed}")


@dataclass
class ImportReport:
    target: Path
    bundle_hash: str
    manifest: dict[str, Any]
    checks: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"imported bundle {self.manifest['bundle_version']} (sha256 {self.bundle_hash}) into {self.target}"]
        lines += [f"  ok: {check}" for check in self.checks]
        lines.append(f"next: cd {self.target} && make up   (then `make demo`, or `switchyard run <stage>` per process)")
        return "\n".join(lines)


def import_bundle(
    bundle: Path,
    into: Path,
    *,
    expect_hash: str | None = None,
    target_schemas: Path | None = None,
    bootstrap: str | None = None,
    topic_prefix: str = "",
    force: bool = False,
) -> ImportReport:
    """Validate `bundle` (a directory or .tar.gz) and copy its files under `into`; raises BundleRefused."""
    if into.exists() and any(into.iterdir()) and not force:
        raise BundleRefused(bundle, [f"{into} is not empty: import into a fresh directory (or pass --force)"])
    with _opened(bundle) as root:
        report = verify(
            root, expect_hash=expect_hash, target_schemas=target_schemas, bootstrap=bootstrap, topic_prefix=topic_prefix
        )
        _lay_out(root, into, report.manifest)
    report.target = into
    return report


def verify(
    root: Path,
    *,
    expect_hash: str | None = None,
    target_schemas: Path | None = None,
    bootstrap: str | None = None,
    topic_prefix: str = "",
) -> ImportReport:
    """Every check of the module docstring against an unpacked bundle; raises BundleRefused with all problems of
    the first failing group (integrity problems first: versions read from tampered files mean nothing)."""
    manifest, bundle_hash = _manifest(root, expect_hash)
    report = ImportReport(target=root, bundle_hash=bundle_hash, manifest=manifest)
    _refuse_if(root, _integrity(root, manifest))
    report.checks.append(f"{len(manifest['files'])} files match their sha256; bundle hash {bundle_hash[:16]}…")
    _refuse_if(root, _versions(root, manifest))
    report.checks.append(
        f"Switchyard {manifest['switchyard_version']}, {len(manifest['models'])} model(s) match their cards, "
        f"{len(manifest['schemas'])} schema fingerprints, route table {manifest['route_table']}"
    )
    target = target_schemas or _default_schemas()
    _refuse_if(root, schema_problems(root / "schemas", target, manifest))
    report.checks.append(f"every schema compatible both ways with {target}")
    if bootstrap:
        _refuse_if(root, broker_problems(root, bootstrap, topic_prefix))
        report.checks.append(
            f"topics applicable to the running broker at {bootstrap}; its newest records readable by the bundle"
        )
    return report


def _default_schemas() -> Path:
    from services.settings import get_settings

    return get_settings().schemas_dir


def _refuse_if(root: Path, problems: list[str]) -> None:
    if problems:
        raise BundleRefused(root, problems)


@contextmanager
def _opened(bundle: Path) -> Iterator[Path]:
    if bundle.is_dir():
        yield bundle
        return
    if not bundle.is_file():
        raise BundleRefused(bundle, [f"{bundle} does not exist"])
    with tempfile.TemporaryDirectory(prefix="switchyard-import-") as scratch:
        yield _extract(bundle, Path(scratch))


def _extract(tarball: Path, scratch: Path) -> Path:
    """Regular files only, each inside one top folder: no links, devices, absolute paths or `..`."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            return _extract_members(archive, tarball, scratch)
    except (tarfile.TarError, OSError) as error:
        raise BundleRefused(tarball, [f"not a readable .tar.gz: {error}"]) from error


def _extract_members(archive: tarfile.TarFile, tarball: Path, scratch: Path) -> Path:
    members = archive.getmembers()
    tops = {PurePosixPath(member.name).parts[0] for member in members if member.name}
    unsafe = [
        member.name
        for member in members
        if not (member.isfile() or member.isdir())
        or PurePosixPath(member.name).is_absolute()
        or ".." in PurePosixPath(member.name).parts
    ]
    if unsafe or len(tops) != 1:
        problems = [f"{name}: not a regular file inside the bundle folder" for name in unsafe]
        raise BundleRefused(tarball, problems or [f"expected one top folder, found {sorted(tops)}"])
    archive.extractall(scratch, filter="data")
    return scratch / tops.pop()


def _manifest(root: Path, expect_hash: str | None) -> tuple[dict[str, Any], str]:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleRefused(root, [f"{MANIFEST} is missing: not a Switchyard bundle"])
    content = path.read_bytes()
    bundle_hash = hashlib.sha256(content).hexdigest()
    problems: list[str] = []
    recorded = (root / HASH_FILE).read_text().split()[0] if (root / HASH_FILE).is_file() else None
    if recorded is None:
        problems.append(f"{HASH_FILE} is missing: the bundle's hash cannot be checked")
    elif recorded != bundle_hash:
        problems.append(
            f"{MANIFEST} was changed after export: its sha256 is {bundle_hash}, {HASH_FILE} says {recorded}"
        )
    if expect_hash and expect_hash.lower() != bundle_hash:
        problems.append(f"bundle hash is {bundle_hash}, not the expected {expect_hash}: a different or altered bundle")
    try:
        manifest = json.loads(content)
    except json.JSONDecodeError as error:
        raise BundleRefused(root, [*problems, f"{MANIFEST} is not JSON: {error.msg}"]) from error
    if manifest.get("format") != FORMAT:
        problems.append(f"{MANIFEST} format {manifest.get('format')!r} is not {FORMAT!r}: export it again")
    _refuse_if(root, problems)
    return manifest, bundle_hash


def _integrity(root: Path, manifest: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    model_of = {path: model_id for model_id, model in manifest["models"].items() for path in model["files"]}
    listed: set[str] = set()
    for entry in manifest["files"]:
        relative = entry["path"]
        listed.add(relative)
        unsafe = unsafe_path(root, relative)
        if unsafe:
            problems.append(unsafe)
            continue
        path = root / relative
        if not path.is_file():
            if relative in model_of:
                problems.append(f"missing model {model_of[relative]}: {relative} is listed but not in the bundle")
            else:
                problems.append(f"missing file {relative} (section {entry['section']})")
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            problems.append(
                f"tampered file {relative} (section {entry['section']}): sha256 {actual[:16]}…, "
                f"the manifest says {entry['sha256'][:16]}…"
            )
    extra = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).as_posix() not in listed | {MANIFEST, HASH_FILE}
    )
    problems.extend(f"unlisted file {relative}: not in the manifest, so not signed" for relative in extra)
    return problems


def unsafe_path(root: Path, relative: str) -> str | None:
    """Why a manifest path could reach outside `root` (read from or written to), or None when it cannot: it must be
    relative, without `..`, `\\` or empty parts, and no part of it under `root` may be a symbolic link."""
    pure = PurePosixPath(relative)
    if (
        not relative
        or pure.is_absolute()
        or "\\" in relative
        or any(part in ("..", ".", "") for part in relative.split("/"))
    ):
        return f"unsafe path {relative!r}: a bundle path is relative and stays inside its folder (no '..', no '/...')"
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            return f"unsafe path {relative!r}: {current.relative_to(root).as_posix()} is a symbolic link"
    return None


def _versions(root: Path, manifest: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    here = switchyard_version()
    if manifest["switchyard_version"].split(".")[0] != here.split(".")[0]:
        problems.append(
            f"Switchyard {manifest['switchyard_version']} bundle, this is {here}: major versions differ, "
            "import it with a matching release"
        )
    models = model_versions(root / "var" / "models")
    for model_id, declared in manifest["models"].items():
        found = models.get(model_id)
        if found is None:
            problems.append(f"missing model {model_id}: no card under var/models/{model_id}")
        elif found["version"] != declared["version"]:
            problems.append(f"model {model_id}: card says {found['version']}, manifest says {declared['version']}")
    ids = {model_id.rsplit("/", 1)[-1] for model_id in models}
    for kind, model_id in deployed_models(root / "var" / "models").items():
        if model_id not in ids:
            problems.append(f"missing model {model_id}: the registry deploys it for {kind}, the bundle lacks it")
    problems.extend(_weights_match_cards(root, models))
    schemas = schema_versions(root / "schemas")
    for name, declared in manifest["schemas"].items():
        actual = schemas.get(name, {}).get("fingerprint")
        if actual != declared["fingerprint"]:
            problems.append(f"schema {name}: fingerprint {actual} in the files, {declared['fingerprint']} declared")
    table = route_table_version(root / "routes" / "route_table.yaml")
    if table != manifest["route_table"]:
        problems.append(f"route table version {table} in the files, {manifest['route_table']} declared")
    if manifest.get("policies") and policy_version(root / "policies") != manifest["policies"]:
        problems.append(f"policy version {policy_version(root / 'policies')}, {manifest['policies']} declared")
    return problems


def _weights_match_cards(root: Path, models: dict[str, dict[str, Any]]) -> list[str]:
    """Models whose format Switchyard can read are checked weight by weight: the card's version is a hash of the
    weights and the embedding space, so a swapped weights file is caught even with a consistent manifest."""
    from services.shared import model_artifact as artifact

    problems: list[str] = []
    for model_id, model in models.items():
        problems.extend(_card_file_hashes(root, model_id, model))
        if model["format"] != artifact.FORMAT:
            continue
        directory = root / "var" / "models" / model_id
        card = json.loads((root / model["card"]).read_text(encoding="utf-8"))
        try:
            weights = artifact.load_model(directory)
        except (artifact.IntentArtifactError, OSError, ValueError, KeyError) as error:
            problems.append(f"missing model {model_id}: its weights cannot be read ({error})")
            continue
        expected = weights.fingerprint(str(card.get("embedder")))
        if isinstance(card.get("cascade"), dict):  # the router's cheap first model is part of the version
            from services.router.intents.cascade import saved_version

            cheap = saved_version(directory, str(card["cascade"].get("static_embedder")))
            expected = f"{expected}+{cheap}"
        if expected != card.get("version"):
            problems.append(f"model {model_id}: weights do not match the card's version {card.get('version')}")
    return problems


def _card_file_hashes(root: Path, model_id: str, model: dict[str, Any]) -> list[str]:
    """A registry card lists its weight files with their sha256: each must be there and match."""
    card = json.loads((root / model["card"]).read_text(encoding="utf-8"))
    listed = card.get("files")
    if not isinstance(listed, dict):
        return []
    directory = (root / model["card"]).parent
    problems: list[str] = []
    for name, digest in listed.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"missing model {model_id}: its card lists {name}, which is not in the bundle")
        elif sha256_file(path) != digest:
            problems.append(f"model {model_id}: {name} does not match the sha256 its card records")
    return problems


def schema_problems(bundle_schemas: Path, target_schemas: Path, manifest: dict[str, Any]) -> list[str]:
    """Each bundled record against the target's current schema and history, both directions; and each topic the
    target also declares must carry the same record."""
    bundle = SchemaRegistry.load(bundle_schemas)
    target = SchemaRegistry.load(target_schemas)
    problems: list[str] = []
    for name in bundle.names():
        if name not in target.names():
            continue
        problems.extend(
            f"incompatible schema {incompatibility}" for incompatibility in check_candidate(target, bundle.schema(name))
        )
    target_topics = _topics(target_schemas.parent / "topics", target_schemas)
    for topic, declared in manifest["topics"].items():
        running = target_topics.get(topic)
        if running and running["value_schema"] != declared["value_schema"]:
            problems.append(
                f"incompatible schema on topic {topic}: the bundle writes {declared['value_schema']}, "
                f"the target's topic carries {running['value_schema']}"
            )
    return problems


def _topics(topics_dir: Path, schemas_dir: Path) -> dict[str, dict[str, Any]]:
    from services.export.describe import topic_versions

    return topic_versions(topics_dir, schemas_dir) if topics_dir.is_dir() else {}


def broker_problems(root: Path, bootstrap: str, topic_prefix: str = "") -> list[str]:
    """What `make topics` from the bundle would refuse on the running broker (fewer partitions, another
    replication factor), and records already on its topics that the bundle's schemas cannot read."""
    from services.infra.topic_specs import load_topics
    from services.infra.topics import admin_client, plan

    registry = SchemaRegistry.load(root / "schemas")
    specs = load_topics(root / "topics", registry)
    planned = plan(admin_client(bootstrap), specs)
    problems = [f"topic on the running broker: {refusal}" for refusal in planned.refusals]
    return problems + running_record_problems(registry, bootstrap, [spec.name for spec in specs], topic_prefix)


SAMPLE_TAIL: Final = 5  # records read back from each partition's end; a transaction's commit marker takes one
SAMPLE_TIMEOUT_S: Final = 10.0


def running_record_problems(registry: SchemaRegistry, bootstrap: str, topics: list[str], prefix: str) -> list[str]:
    """The newest committed records of every partition of the running topics, decoded with the bundle's schemas:
    a record whose writer schema the bundle does not know, or cannot resolve, is one its consumers would
    dead-letter."""
    from confluent_kafka import Consumer, TopicPartition

    from services.wire.codec import AvroCodec

    consumer = Consumer(
        confluent_config(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"switchyard-import-check-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        metadata = consumer.list_topics(timeout=10).topics
        assignment = []
        for topic in (f"{prefix}{name}" for name in topics):
            for partition in metadata[topic].partitions if topic in metadata else ():
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                if high > low:
                    assignment.append(TopicPartition(topic, partition, max(low, high - SAMPLE_TAIL)))
        return _decode_tails(consumer, assignment, AvroCodec(registry))
    finally:
        consumer.close()


def _decode_tails(consumer: Any, assignment: list[Any], codec: Any) -> list[str]:
    from services.wire.errors import WireContractError

    consumer.assign(assignment)
    waiting = {(tp.topic, tp.partition) for tp in assignment}
    problems: list[str] = []
    deadline = time.monotonic() + SAMPLE_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        waiting.discard((message.topic(), message.partition()))
        try:
            codec.decode(message.value())
        except WireContractError as error:
            problems.append(
                f"incompatible schema on running topic {message.topic()} (partition {message.partition()}, "
                f"offset {message.offset()}): the bundle's schemas cannot read it: {error}"
            )
    return sorted(set(problems))


def _lay_out(root: Path, into: Path, manifest: dict[str, Any]) -> None:
    """Each file at its project-relative path, modes kept (the infra scripts stay executable), and the manifest
    kept as provenance under .switchyard-bundle/."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in manifest["files"]:
        # checked by _integrity already; again against the target, whose folders may hold symbolic links
        unsafe = unsafe_path(into, entry["path"])
        if unsafe:
            raise BundleRefused(root, [f"cannot lay out into {into}: {unsafe}"])
        target = into / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / entry["path"], target)  # mode kept (scripts stay executable), times are now
    provenance = into / ".switchyard-bundle"
    provenance.mkdir(exist_ok=True)
    shutil.copy2(root / MANIFEST, provenance / MANIFEST)
    shutil.copy2(root / HASH_FILE, provenance / HASH_FILE)
