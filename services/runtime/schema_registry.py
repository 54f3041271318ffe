"""Former path of services.wire.schema_registry, kept for the documented `python -m services.runtime.schema_registry`
and for code outside this repository; new code imports services.wire.schema_registry."""

import sys

from services.wire.schema_registry import *  # noqa: F403
from services.wire.schema_registry import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
