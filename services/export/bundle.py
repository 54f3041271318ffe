"""`switchyard export`: the whole system as one versioned bundle, a directory and a .tar.gz, signed by hash.

The bundle holds every file the sections of contents.py declare, at its project-relative path, plus generated
pipeline definitions (the Weaviate collection) and `manifest.json`: every file with its sha256 and section, the
Switchyard version, the schema fingerprints, topic and model versions, the route table and policy versions and
the provider references. The bundle's hash is the sha256 of manifest.json (which names every file's hash), kept
in BUNDLE.sha256; an operator pins it and `switchyard import --expect-hash` checks it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from services.export.contents import SECTIONS, Section, collect
from services.export.secrets import LiteralSecretError, SecretFinding, find_secrets, redact

FORMAT: Final = "switchyard.bundle/1"
MANIFEST: Final = "manifest.json"
HASH_FILE: Final = "BUNDLE.sha256"
WEAVIATE_DEFINITION: Final = "pipelines/weaviate/{name}.json"
TAR_MTIME: Final = 0  # fixed, so the same files give the same tarball


class ExportError(RuntimeError):
    """The export cannot be made; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class ExportOptions:
    root: Path
    var_dir: Path
    out_dir: Path
    with_data: bool = False
    data_tables: tuple[str, ...] = ()
    """With --with-data: only these ClickHouse tables (default every table of the database)."""
    redact_secrets: bool = False
    tarball: bool = True
    name: str | None = None
    """Directory name of the bundle; default switchyard-<version>-<UTC timestamp>."""


@dataclass
class ExportResult:
    directory: Path
    tarball: Path | None
    bundle_hash: str
    manifest: dict[str, Any]
    redacted: list[SecretFinding] = field(default_factory=list)

    def summary(self) -> str:
        manifest = self.manifest
        lines = [f"bundle {manifest['bundle_version']}  sha256 {self.bundle_hash}", f"  directory {self.directory}"]
        if self.tarball is not None:
            lines.append(f"  tarball   {self.tarball} ({_size(self.tarball.stat().st_size)})")
        lines.append(f"  {len(manifest['files'])} files, {_size(manifest['total_bytes'])} uncompressed")
        for name, info in manifest["sections"].items():
            lines.append(f"  {name:<17} {info['files']:>4} files {_size(info['bytes']):>10}  {info['description']}")
        for model_id, model in manifest["models"].items():
            lines.append(f"  model {model_id}: version {model['version']} ({len(model['files'])} files)")
        lines.append(f"  schemas: {len(manifest['schemas'])} records; topics: {len(manifest['topics'])}")
        for finding in self.redacted:
            lines.append(f"  redacted {finding}: now ${{{finding.reference}}}")
        return "\n".join(lines)


def switchyard_version() -> str:
    try:
        return metadata.version("switchyard")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_bundle(options: ExportOptions) -> ExportResult:
    """Write the bundle directory (and tarball); refuses literal secrets unless asked to redact them."""
    sections = [section for section in SECTIONS if options.with_data or not section.data]
    found = collect(options.root, options.var_dir, sections)
    _require(found, options)
    stamp = datetime.now(UTC)
    version = switchyard_version()
    name = options.name or f"switchyard-{version}-{stamp:%Y%m%dT%H%M%SZ}"
    directory = options.out_dir / name
    if directory.exists():
        raise ExportError(f"{directory} exists already: remove it or choose another --out")
    secrets = _secrets(found, sections)
    if secrets and not options.redact_secrets:
        raise LiteralSecretError(secrets)
    staging = options.out_dir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        file_sections = _copy(found, staging, secrets)
        file_sections.update(_generated(staging, options))
        manifest = build_manifest(
            staging, file_sections, version=version, bundle_version=f"{version}+{stamp:%Y%m%dT%H%M%SZ}"
        )
        manifest["created_at"] = stamp.isoformat(timespec="seconds")
        manifest["source"] = _source(options.root)
        manifest["with_data"] = options.with_data
        manifest["redacted_secrets"] = [
            {"file": finding.file, "key": finding.key, "reference": f"${{{finding.reference}}}"} for finding in secrets
        ]
        bundle_hash = write_manifest(staging, manifest)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tarball = write_tarball(directory) if options.tarball else None
    return ExportResult(directory, tarball, bundle_hash, manifest, secrets)


def _require(found: Mapping[str, tuple[Path, str]], options: ExportOptions) -> None:
    sections = {section for _, section in found.values()}
    missing = [name for name in ("routes", "schemas", "topics", "runtime", "deploy") if name not in sections]
    if missing:
        raise ExportError(f"{options.root} is not a Switchyard tree: nothing found for {', '.join(missing)}")
    if "models" not in sections:
        raise ExportError(
            f"no trained model under {options.var_dir / 'models'}: start the router once or run "
            "`python -m services.router.intents.train` before exporting"
        )


def _secrets(found: Mapping[str, tuple[Path, str]], sections: Iterable[Section]) -> list[SecretFinding]:
    checked = {section.name for section in sections if section.secrets_checked}
    findings: list[SecretFinding] = []
    for relative, (path, section) in found.items():
        if section in checked:
            findings.extend(find_secrets(path.read_text(encoding="utf-8"), relative))
    return findings


def _copy(found: Mapping[str, tuple[Path, str]], staging: Path, secrets: list[SecretFinding]) -> dict[str, str]:
    by_file: dict[str, list[SecretFinding]] = {}
    for finding in secrets:
        by_file.setdefault(finding.file, []).append(finding)
    sections: dict[str, str] = {}
    for relative, (path, section) in found.items():
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative in by_file:
            target.write_text(redact(path.read_text(encoding="utf-8"), by_file[relative]), encoding="utf-8")
        else:
            shutil.copy2(path, target)
        sections[relative] = section
    return sections


def _generated(staging: Path, options: ExportOptions) -> dict[str, str]:
    """Files made at export: the Weaviate collection definition and, with --with-data, the telemetry tables."""
    from services.export.pipelines import weaviate_collection_definition

    definition = weaviate_collection_definition()
    relative = WEAVIATE_DEFINITION.format(name=definition["class"])
    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
    (staging / relative).write_text(json.dumps(definition, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    generated = {relative: "weaviate"}
    if options.with_data:
        from services.export.pipelines import dump_clickhouse_tables

        target = staging / "var" / "export-data" / "clickhouse"
        for path in dump_clickhouse_tables(target, tables=options.data_tables):
            generated[path.relative_to(staging).as_posix()] = "data"
    return generated


def _source(root: Path) -> dict[str, Any]:
    """Where the bundle came from: the git commit and whether the tree had uncommitted changes, when known."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "uncommitted_changes": None}
    return {"git_commit": commit, "uncommitted_changes": bool(dirty)}


def build_manifest(
    directory: Path, file_sections: Mapping[str, str], *, version: str, bundle_version: str
) -> dict[str, Any]:
    """Everything an importer checks, read from the files as they are in `directory`."""
    from services.export.describe import describe
    from services.wire.errors import WireContractError

    try:
        versions = describe(directory)
    except (ValueError, OSError, WireContractError) as error:
        raise ExportError(f"the configuration does not load, so it is not exported: {error}") from error
    missing = sorted(set(versions["deployed_models"].values()) - {m.rsplit("/", 1)[-1] for m in versions["models"]})
    if missing:
        raise ExportError(f"the model registry deploys {', '.join(missing)}, which is not under var/models/registry")
    files = [
        {
            "path": relative,
            "section": file_sections[relative],
            "sha256": sha256_file(directory / relative),
            "size": (directory / relative).stat().st_size,
        }
        for relative in sorted(file_sections)
    ]
    sections: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        chosen = [entry for entry in files if entry["section"] == section.name]
        if chosen:
            sections[section.name] = {
                "description": section.description,
                "files": len(chosen),
                "bytes": sum(entry["size"] for entry in chosen),
            }
    content = hashlib.sha256("".join(f"{entry['path']}\t{entry['sha256']}\n" for entry in files).encode())
    return {
        "format": FORMAT,
        "bundle_version": bundle_version,
        "switchyard_version": version,
        "content_sha256": content.hexdigest(),
        "total_bytes": sum(entry["size"] for entry in files),
        "sections": sections,
        **versions,
        "files": files,
    }


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> str:
    """manifest.json and BUNDLE.sha256; returns the bundle hash (the sha256 of manifest.json's bytes)."""
    content = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    (directory / MANIFEST).write_bytes(content)
    bundle_hash = hashlib.sha256(content).hexdigest()
    (directory / HASH_FILE).write_text(f"{bundle_hash}  {MANIFEST}\n", encoding="utf-8")
    return bundle_hash


def write_tarball(directory: Path) -> Path:
    """<directory>.tar.gz with one top folder, sorted entries, fixed times and owners: reproducible."""
    tarball = directory.with_name(directory.name + ".tar.gz")
    paths = sorted(path for path in directory.rglob("*") if path.is_file())
    with (
        tarball.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=TAR_MTIME) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in paths:
            info = tarfile.TarInfo(f"{directory.name}/{path.relative_to(directory).as_posix()}")
            info.size = path.stat().st_size
            info.mtime = TAR_MTIME
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            with path.open("rb") as file:
                archive.addfile(info, file)
    tarball.with_name(tarball.name + ".sha256").write_text(f"{sha256_file(tarball)}  {tarball.name}\n")
    return tarball


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
