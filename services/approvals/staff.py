"""Who may decide an escalated request: staff as reference data (the compacted `ref.staff`, keyed by staff id), the
check the approvals process makes of every decision's author, and `switchyard staff` (the seed's staff:
services.tools.seed.staff_rows).

A decision counts only from a member of staff the table knows, who is active, holds a deciding role and is
assigned to the request's store; the store wildcard `*` is for regional managers alone. The table is the only
source: a name on the command line or in a feedback record is a claim until the table says who that is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Final

from services.approvals.release import ApprovalRejected
from services.runtime.reference import ReferenceTable, read_rows
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.models import Staff, StaffRole
from services.wire.schema_registry import SchemaRegistry

STAFF_TOPIC: Final = "ref.staff"
# in a member's stores: every store (regional managers only)
WILDCARD: Final = "*"
DECIDING_ROLES: Final = frozenset({StaffRole.MANAGER, StaffRole.REGIONAL_MANAGER})


def covers(member: Staff, store_id: str) -> bool:
    """Whether `member` is assigned to `store_id`, by name or (a regional manager) by the wildcard."""
    if store_id in member.stores:
        return True
    return WILDCARD in member.stores and member.role == StaffRole.REGIONAL_MANAGER


def authorise(staff_id: str, store_id: str, staff: Mapping[str, Staff], request_id: str) -> Staff:
    """The member of staff who may decide store `store_id`'s request; raises ApprovalRejected with the reason
    when the table does not know them, they are inactive, hold no deciding role or are not assigned there."""
    member = staff.get(staff_id)
    if member is None:
        raise ApprovalRejected(f"request {request_id}: {staff_id} is not a known member of staff ({STAFF_TOPIC})")
    if not member.active:
        raise ApprovalRejected(f"request {request_id}: {staff_id} is inactive and can no longer decide")
    if member.role not in DECIDING_ROLES:
        raise ApprovalRejected(f"request {request_id}: {staff_id} is a {member.role.value.lower()}, not a manager")
    if not covers(member, store_id):
        raise ApprovalRejected(f"request {request_id}: {staff_id} is not a manager of store {store_id}")
    return member


def staff_table(settings: Settings, codec: AvroCodec) -> ReferenceTable[Staff]:
    return ReferenceTable(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic(STAFF_TOPIC),
        record="Staff",
        model=Staff,
        codec=codec,
        key_of=lambda member: member.staff_id,
    )


# -- switchyard staff -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard staff", description="who may approve or reject (ref.staff)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add or replace a member of staff (active)")
    add.add_argument("staff_id", help="the id they decide with (`switchyard approve --manager ID`)")
    add.add_argument("--name", required=True, help="their full name")
    add.add_argument(
        "--role", required=True, choices=[role.value.lower() for role in StaffRole], help="what they may decide"
    )
    add.add_argument("--store", action="append", default=[], help=f"a store they work for (repeat; {WILDCARD!r}: all)")
    deactivate = commands.add_parser("deactivate", help="refuse their decisions from now on (kept, inactive)")
    deactivate.add_argument("staff_id", help="whom to deactivate")
    listing = commands.add_parser("list", help="every member of staff as JSON lines")
    listing.add_argument("--store", help="only who may work for this store")
    args = parser.parse_args(argv)
    from services.tools.seed import publish_staff  # the seed imports this module for its wildcard

    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    now = int(time.time() * 1000)
    if args.command == "add":
        role = StaffRole(args.role.upper())
        if not args.store or (WILDCARD in args.store and role != StaffRole.REGIONAL_MANAGER):
            parser.error(f"--store names their stores; {WILDCARD!r} (every store) is for a regional_manager only")
        member = Staff(
            staff_id=args.staff_id, name=args.name, role=role, stores=args.store, active=True, updated_at=now
        )
        publish_staff(settings.kafka_bootstrap, codec, [member], settings.topic(STAFF_TOPIC))
        print(json.dumps(member.model_dump(mode="json")))
        return 0
    staff = asyncio.run(read_rows(staff_table(settings, codec)))
    if args.command == "deactivate":
        found = staff.get(args.staff_id)
        if found is None:
            print(f"switchyard staff deactivate: no member of staff {args.staff_id}", file=sys.stderr)
            return 1
        inactive = found.model_copy(update={"active": False, "updated_at": now})
        publish_staff(settings.kafka_bootstrap, codec, [inactive], settings.topic(STAFF_TOPIC))
        print(json.dumps({"staff_id": found.staff_id, "active": False}))
        return 0
    for member in sorted(staff.values(), key=lambda row: row.staff_id):
        if args.store is None or covers(member, args.store):
            print(json.dumps(member.model_dump(mode="json")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
