"""Where `switchyard verify` reads the signed checkpoints from: the `audit.checkpoints` topic (every record it still
holds, read committed) or a JSON lines file an auditor keeps offline, which `switchyard export-checkpoints -o FILE`
writes and adds to on every later run, so it keeps the checkpoints the compacted topic has since dropped."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.auditor.checkpoint import CHECKPOINT_TOPIC
from services.runtime.reference import TopicTable
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.models import AuditCheckpoint
from services.wire.registry_client import codec_from_settings


class CheckpointFeed(TopicTable):
    """Every checkpoint on the topic, in topic order per partition. A record that is not a checkpoint (or a
    tombstone, which would delete one) is kept aside: only the auditor writes this topic."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        super().__init__(bootstrap=settings.kafka_bootstrap, topic=settings.topic(CHECKPOINT_TOPIC))
        self.codec = codec
        self.checkpoints: list[AuditCheckpoint] = []
        self.not_checkpoints: list[str] = []

    def __len__(self) -> int:
        return len(self.checkpoints)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            self.not_checkpoints.append(f"a tombstone for chain {(key or b'').decode(errors='replace')!r}")
            return
        try:
            _, decoded = self.codec.decode(value, reader="AuditCheckpoint")
            self.checkpoints.append(AuditCheckpoint.model_validate(decoded))
        except Exception as error:  # anything else on the topic is a finding, never fatal
            self.rejected += 1
            self.not_checkpoints.append(f"a record that is not a checkpoint ({type(error).__name__}: {error})")


class CheckpointsUnavailable(RuntimeError):
    """The checkpoints topic cannot be read (Kafka away, the topic missing, too slow)."""


async def read_topic(settings: Settings, timeout_s: float = 60.0) -> CheckpointFeed:
    """The topic's checkpoints up to its end as it was when reading began."""
    feed = CheckpointFeed(settings, codec_from_settings(settings))
    try:
        await feed.start()
        await asyncio.wait_for(feed.ready.wait(), timeout_s)
    except (KafkaError, RuntimeError, TimeoutError) as error:
        raise CheckpointsUnavailable(f"cannot read {feed.topic} from {settings.kafka_bootstrap}: {error!r}") from error
    finally:
        await feed.stop()
    return feed


def read_jsonl(path: Path) -> list[AuditCheckpoint]:
    """A checkpoints file; a line that is not a checkpoint is an error naming the line."""
    checkpoints = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            checkpoints.append(AuditCheckpoint.model_validate_json(line))
        except ValidationError as error:
            raise ValueError(f"{path}:{number} is not an audit checkpoint: {error}") from error
    return checkpoints


def write_jsonl(checkpoints: list[AuditCheckpoint], path: Path) -> int:
    """Adds the checkpoints the file does not hold yet (one JSON object a line, sorted keys); returns how many."""
    seen = {_line(checkpoint) for checkpoint in (read_jsonl(path) if path.exists() else [])}
    added = []
    for checkpoint in checkpoints:
        line = _line(checkpoint)
        if line not in seen:
            seen.add(line)
            added.append(line)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in added)
    return len(added)


def _line(checkpoint: AuditCheckpoint) -> str:
    return json.dumps(checkpoint.model_dump(mode="json"), sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard export-checkpoints", description=__doc__)
    parser.add_argument("--output", "-o", type=Path, required=True, help="JSON lines file to create or add to")
    args = parser.parse_args(argv)
    try:
        feed = asyncio.run(read_topic(get_settings()))
    except CheckpointsUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    added = write_jsonl(feed.checkpoints, args.output)
    print(f"{added} new of {len(feed.checkpoints)} checkpoints on the topic added to {args.output}", file=sys.stderr)
    for what in feed.not_checkpoints:
        print(f"WARNING the checkpoints topic holds {what}", file=sys.stderr)
    return 1 if feed.not_checkpoints else 0
