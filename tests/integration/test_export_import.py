"""Export the running system as one bundle and import it elsewhere: every file signed by hash, a tree where `make up`
runs, the same decisions for the same requests; and a bundle that was tampered with, lost its model, carries an
incompatible schema or topics the running broker cannot take is refused with a message that says which and why."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.export.bundle import HASH_FILE, MANIFEST, ExportOptions, ExportResult, export_bundle, write_manifest
from services.export.equivalence import DEFAULT_REQUESTS, compare
from services.export.importer import BundleRefused, import_bundle, verify
from services.export.secrets import LiteralSecretError
from services.router.intents.classifier import ensure_trained
from services.runtime.kafka_clients import confluent_config
from services.settings import REPO_ROOT, Settings
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry
from tests.integration.conftest import delete_topics, wait_for_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    ensure_trained(settings.var_dir / "models" / "intent")  # what the router does on its first start
    out = tmp_path_factory.mktemp("bundles")
    return export_bundle(ExportOptions(root=REPO_ROOT, var_dir=settings.var_dir, out_dir=out))


@pytest.fixture(scope="module")
def imported(bundle: ExportResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert bundle.tarball is not None
    target = tmp_path_factory.mktemp("imported") / "switchyard"
    import_bundle(bundle.tarball, target)
    return target


def copy_of(bundle: ExportResult, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle.directory, tmp_path / bundle.directory.name))


def tree_from(bundle: ExportResult, tmp_path: Path) -> Path:
    """A complete Switchyard tree to change and export again."""
    tree = tmp_path / "tree"
    import_bundle(bundle.directory, tree)
    return tree


def export_tree(tree: Path, tmp_path: Path, *, redact_secrets: bool = False) -> ExportResult:
    out = tmp_path / "out"
    options = ExportOptions(root=tree, var_dir=tree / "var", out_dir=out, tarball=False, redact_secrets=redact_secrets)
    return export_bundle(options)


def refusal(bundle: Path, **options: str) -> str:
    with pytest.raises(BundleRefused) as refused:
        verify(bundle, **options)  # type: ignore[arg-type]
    return str(refused.value)


def test_the_manifest_lists_every_file_with_its_hash_and_the_versions_it_carries(bundle: ExportResult) -> None:
    manifest = json.loads((bundle.directory / MANIFEST).read_text())
    card = json.loads((REPO_ROOT / "var" / "models" / "intent" / "card.json").read_text())

    for entry in manifest["files"]:
        assert hashlib.sha256((bundle.directory / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert (bundle.directory / HASH_FILE).read_text().split()[0] == bundle.bundle_hash
    assert hashlib.sha256((bundle.directory / MANIFEST).read_bytes()).hexdigest() == bundle.bundle_hash
    assert manifest["models"]["intent"]["version"] == card["version"]
    assert manifest["models"]["intent"]["evaluation"]["accuracy"] == card["evaluation"]["accuracy"]
    assert len(manifest["schemas"]) == len(list((REPO_ROOT / "schemas").glob("*.avsc")))
    version = yaml.safe_load((REPO_ROOT / "routes" / "route_table.yaml").read_text())["version"]
    assert manifest["route_table"].startswith(f"{version}+")
    assert manifest["providers"]["default"]["endpoint"].startswith("${SWITCHYARD_MODEL_BASE_URL:-")
    assert {"routes", "schemas", "topics", "models", "clickhouse", "weaviate", "knowledge", "deploy"} <= set(
        manifest["sections"]
    )
    assert "data" not in manifest["sections"]  # production data only with --with-data
    weaviate = json.loads((bundle.directory / "pipelines" / "weaviate" / "KnowledgeBase.json").read_text())
    assert {p["name"] for p in weaviate["properties"]} >= {"text", "source", "region", "content_hash"}


def test_the_tarball_holds_exactly_the_bundle_directory(bundle: ExportResult) -> None:
    assert bundle.tarball is not None
    with tarfile.open(bundle.tarball) as archive:
        names = {Path(name).relative_to(bundle.directory.name).as_posix() for name in archive.getnames()}
    on_disk = {path.relative_to(bundle.directory).as_posix() for path in bundle.directory.rglob("*") if path.is_file()}
    assert names == on_disk


def test_an_imported_bundle_is_a_tree_where_make_up_runs(bundle: ExportResult, imported: Path) -> None:
    manifest = json.loads((bundle.directory / MANIFEST).read_text())
    for entry in manifest["files"]:
        assert (imported / entry["path"]).is_file(), entry["path"]
    assert (imported / "infra" / "kafka" / "kafka.sh").stat().st_mode & 0o111
    assert (imported / "var" / "models" / "intent" / "card.json").is_file()

    dry_run = subprocess.run(["make", "-n", "up"], cwd=imported, capture_output=True, text=True, check=False)

    assert dry_run.returncode == 0, dry_run.stderr
    for script in ("infra/kafka/kafka.sh start", "infra/clickhouse/clickhouse.sh start", "infra/weaviate/weaviate.sh"):
        assert script in dry_run.stdout


def test_the_imported_system_makes_the_same_decisions_as_the_original(imported: Path) -> None:
    result = compare(REPO_ROOT, imported, DEFAULT_REQUESTS)

    assert result.differences == []
    rows = result.results["imported"]
    assert len(rows) == len(DEFAULT_REQUESTS.read_text().splitlines())
    assert any(row["answer"] for row in rows)  # workflow answers were compared, not only routes
    assert len({row["route_id"] for row in rows}) >= 5


def test_a_tampered_file_is_refused_naming_the_file(bundle: ExportResult, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path)
    table = copy / "routes" / "route_table.yaml"
    table.write_text(table.read_text().replace("threshold: 0.55", "threshold: 0.05"))

    message = refusal(copy)

    assert "tampered file routes/route_table.yaml (section routes)" in message
    with pytest.raises(BundleRefused):
        import_bundle(copy, tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_an_unlisted_file_slipped_into_the_bundle_is_refused(bundle: ExportResult, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path)
    (copy / "policies" / "zz_allow_everything.yaml").write_text("rules: []\n")

    assert "unlisted file policies/zz_allow_everything.yaml: not in the manifest" in refusal(copy)


def test_a_bundle_missing_its_model_is_refused_naming_the_model(bundle: ExportResult, tmp_path: Path) -> None:
    copy = copy_of(bundle, tmp_path)
    (copy / "var" / "models" / "intent" / "intent_model.npz").unlink()

    assert "missing model intent: var/models/intent/intent_model.npz is listed but not in the bundle" in refusal(copy)


def test_swapped_weights_are_refused_even_when_the_manifest_was_signed_again(
    bundle: ExportResult, tmp_path: Path
) -> None:
    copy = copy_of(bundle, tmp_path)
    weights = copy / "var" / "models" / "intent" / "intent_model.npz"
    with np.load(weights) as arrays:
        np.savez(weights, classes=arrays["classes"], coef=arrays["coef"] * 1.5, intercept=arrays["intercept"])
    manifest = json.loads((copy / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"] == "var/models/intent/intent_model.npz":
            entry["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
            entry["size"] = weights.stat().st_size
    write_manifest(copy, manifest)

    assert "model intent: weights do not match the card's version" in refusal(copy)


def test_a_manifest_changed_after_export_or_another_expected_hash_is_refused(
    bundle: ExportResult, tmp_path: Path
) -> None:
    assert "not the expected " + "0" * 64 in refusal(bundle.directory, expect_hash="0" * 64)
    copy = copy_of(bundle, tmp_path)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["switchyard_version"] = "0.1.1"
    (copy / MANIFEST).write_text(json.dumps(manifest))

    assert f"{MANIFEST} was changed after export" in refusal(copy)
    assert verify(bundle.directory, expect_hash=bundle.bundle_hash).bundle_hash == bundle.bundle_hash


def test_an_incompatible_schema_is_refused_naming_the_record_and_the_field(
    bundle: ExportResult, tmp_path: Path
) -> None:
    tree = tree_from(bundle, tmp_path)
    request_schema = tree / "schemas" / "switchyard.Request.avsc"
    schema = json.loads(request_schema.read_text())
    schema["fields"].append({"name": "basket_total_cents", "type": "long", "doc": "required: no default"})
    request_schema.write_text(json.dumps(schema, indent=2))
    exported = export_tree(tree, tmp_path)

    message = refusal(exported.directory)

    assert "incompatible schema switchyard.Request backward break" in message
    assert "basket_total_cents" in message
    assert "give the new field a default" in message


def test_topics_the_running_broker_cannot_take_are_refused(bundle: ExportResult, tmp_path: Path, kafka: str) -> None:
    tree = tree_from(bundle, tmp_path)
    chain = tree / "topics" / "chain.yaml"
    chain.write_text(chain.read_text().replace("partitions: 12", "partitions: 4", 1))
    exported = export_tree(tree, tmp_path)

    message = refusal(exported.directory, bootstrap=kafka)

    assert "topic on the running broker: requests:" in message
    assert "12" in message and "4" in message


def test_a_literal_secret_is_refused_at_export_and_redacted_on_request(bundle: ExportResult, tmp_path: Path) -> None:
    tree = tree_from(bundle, tmp_path)
    providers = tree / "providers" / "providers.yaml"
    secret = "sk-live-4f9c2a7e1b3d5f6a8c0e"
    providers.write_text(providers.read_text().replace("api_key_env: null", f"api_key: {secret}", 1))

    with pytest.raises(LiteralSecretError, match=r"providers/providers.yaml: providers.default.api_key"):
        export_tree(tree, tmp_path)
    redacted = export_tree(tree, tmp_path, redact_secrets=True)

    assert (
        "api_key: ${SWITCHYARD_SECRET_PROVIDERS_DEFAULT_API_KEY}"
        in (redacted.directory / "providers" / "providers.yaml").read_text()
    )
    assert all(secret.encode() not in path.read_bytes() for path in redacted.directory.rglob("*") if path.is_file())
    assert redacted.manifest["redacted_secrets"][0]["key"] == "providers.default.api_key"


def test_with_data_the_clickhouse_tables_travel_as_json_lines(
    settings: Settings, tmp_path: Path, clickhouse: str
) -> None:
    result = export_bundle(
        ExportOptions(
            root=REPO_ROOT,
            var_dir=settings.var_dir,
            out_dir=tmp_path,
            with_data=True,
            data_tables=("requests", "schema_migrations"),
            tarball=False,
        )
    )

    data = {path for path, entry in ((f["path"], f) for f in result.manifest["files"]) if entry["section"] == "data"}
    tables = {path for path in data if path.startswith("var/export-data/")}
    assert tables == {f"var/export-data/clickhouse/{table}.jsonl.gz" for table in ("requests", "schema_migrations")}
    with gzip.open(result.directory / "var/export-data/clickhouse/schema_migrations.jsonl.gz") as rows:
        assert b"001_database.sql" in rows.read()


def registered_model(tree: Path, model_id: str) -> None:
    """A model in the learning loop's registry layout, deployed for its kind."""
    registry = tree / "var" / "models" / "registry"
    model = registry / "models" / model_id
    model.mkdir(parents=True)
    (model / "memory.json").write_text('{"answers": []}\n')
    digest = hashlib.sha256((model / "memory.json").read_bytes()).hexdigest()
    card = {"model_id": model_id, "kind": "answer_memory", "files": {"memory.json": digest}}
    (model / "registry_card.json").write_text(json.dumps(card))
    (registry / "deployed.json").write_text(json.dumps({"answer_memory": model_id}))


def drop_files(bundle: Path, prefix: str) -> None:
    """Remove files from a bundle and from its manifest, then sign it again: a consistent but incomplete bundle."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    for entry in manifest["files"]:
        if entry["path"].startswith(prefix):
            (bundle / entry["path"]).unlink()
    manifest["files"] = [entry for entry in manifest["files"] if not entry["path"].startswith(prefix)]
    manifest["models"] = {key: value for key, value in manifest["models"].items() if not prefix.endswith(f"{key}/")}
    write_manifest(bundle, manifest)


def test_a_deployed_registry_model_missing_from_a_signed_bundle_is_refused(
    bundle: ExportResult, tmp_path: Path
) -> None:
    tree = tree_from(bundle, tmp_path)
    registered_model(tree, "answer_memory-0123456789ab")
    exported = export_tree(tree, tmp_path)
    assert exported.manifest["deployed_models"] == {"answer_memory": "answer_memory-0123456789ab"}
    assert verify(exported.directory).manifest["models"]["registry/models/answer_memory-0123456789ab"]

    drop_files(exported.directory, "var/models/registry/models/answer_memory-0123456789ab/")

    assert "missing model answer_memory-0123456789ab: the registry deploys it for answer_memory" in refusal(
        exported.directory
    )


def test_registry_weights_that_differ_from_their_card_are_refused(bundle: ExportResult, tmp_path: Path) -> None:
    tree = tree_from(bundle, tmp_path)
    registered_model(tree, "answer_memory-0123456789ab")
    (tree / "var/models/registry/models/answer_memory-0123456789ab/memory.json").write_text('{"answers": [1]}\n')

    exported = export_tree(tree, tmp_path)

    assert "memory.json does not match the sha256 its card records" in refusal(exported.directory)


def test_records_on_the_running_topics_that_the_bundle_cannot_read_are_refused(
    bundle: ExportResult, tmp_path: Path, kafka: str, admin: AdminClient
) -> None:
    # the running system has moved on: its Request gained a field, and records written with it are on the topic
    newer = Path(shutil.copytree(REPO_ROOT / "schemas", tmp_path / "schemas"))
    request_schema = newer / "switchyard.Request.avsc"
    schema = json.loads(request_schema.read_text())
    schema["fields"].append({"name": "lane", "type": ["null", "string"], "default": None, "doc": "checkout lane"})
    request_schema.write_text(json.dumps(schema))
    codec = AvroCodec(SchemaRegistry.load(newer))
    request = json.loads(DEFAULT_REQUESTS.read_text().splitlines()[0]) | {"lane": "7"}
    prefix = f"it-export-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}requests"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        wait_for_topic(admin, topic)
        producer = Producer(confluent_config())
        producer.produce(topic, codec.encode("Request", request))
        assert producer.flush(10) == 0

        message = refusal(bundle.directory, bootstrap=kafka, topic_prefix=prefix)
    finally:
        delete_topics(admin, [topic])

    assert f"incompatible schema on running topic {topic} (partition 0, offset 0)" in message
    assert "the bundle's schemas cannot read it" in message
