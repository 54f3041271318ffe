"""`switchyard dead-letters show [--stage S] [--request ID] [--limit N] [--open]`: the dead letters ClickHouse
holds, newest first, as JSON lines: where each record came from, which stage refused it and why. Their original
bytes are sealed to the operator's dead-letter key (services/runtime/sealing.py); `--open` opens them with the
private key (var/secrets/dead_letters_x25519.pem, or the folder of SWITCHYARD_PII_VAULT_KEY_FILE) and shows the
record decoded where it is Avro, else as base64. Without `--open` only the sealed size and key id are shown."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from services.infra.clickhouse import get_client
from services.runtime.deadletter import dead_letter_id_of, opened_original
from services.runtime.sealing import Opener, SealingError, dead_letter_opener
from services.settings import get_settings
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry

QUERY = """\
SELECT stage, topic, `partition`, `offset`, request_id, error_type, reason, original, failed_at, original_sealed_with
FROM switchyard.dead_letters FINAL
WHERE ({stage:String} = '' OR stage = {stage:String}) AND ({request:String} = '' OR request_id = {request:String})
ORDER BY failed_at DESC
LIMIT {limit:UInt32}"""


def shown(row: Sequence[Any], opener: Opener | None, codec: AvroCodec) -> dict[str, Any]:
    stage, topic, partition, offset, request_id, error_type, reason, original, failed_at, sealed_with = row
    original = original.encode("latin-1") if isinstance(original, str) else bytes(original)
    letter: dict[str, Any] = {
        "dead_letter_id": dead_letter_id_of(stage, topic, int(partition), int(offset)),
        "stage": stage,
        "topic": topic,
        "partition": int(partition),
        "offset": int(offset),
        "request_id": request_id,
        "error_type": error_type,
        "reason": reason,
        "failed_at": failed_at.isoformat(),
        "original_sealed_with": sealed_with,
        "original_bytes": len(original),
    }
    if opener is None:
        return letter
    try:
        clear = opened_original({**letter, "original": original}, opener)
    except SealingError as error:
        return {**letter, "open_error": str(error)}
    try:
        name, record = codec.decode(clear)
        letter["original"] = {"record": name, "value": json.loads(json.dumps(record, default=_plain))}
    except Exception:  # not Avro (often why it was dead-lettered): the bytes as they were
        letter["original"] = {"base64": base64.b64encode(clear).decode()}
    return letter


def _plain(value: object) -> object:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard dead-letters", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="dead letters, newest first, as JSON lines")
    show.add_argument("--stage", default="", help="only this stage's (router, governor, telemetry, ...)")
    show.add_argument("--request", default="", help="only this request id's")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default %(default)s)")
    show.add_argument("--open", action="store_true", help="open the sealed original bytes with the private key")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        opener = dead_letter_opener(settings) if args.open else None
    except (FileNotFoundError, ValueError) as error:
        print(f"switchyard dead-letters: {error}", file=sys.stderr)
        return 2
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    client = get_client(settings)
    try:
        parameters = {"stage": args.stage, "request": args.request, "limit": args.limit}
        rows = client.query(QUERY, parameters=parameters, column_formats={"original": "bytes"}).result_rows
    finally:
        client.close()
    for row in rows:
        print(json.dumps(shown(row, opener, codec), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
