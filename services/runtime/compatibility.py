"""Former path of services.wire.compatibility, kept for the documented `python -m services.runtime.compatibility`
and for code outside this repository; new code imports services.wire.compatibility."""

import sys

from services.wire.compatibility import *  # noqa: F403
from services.wire.compatibility import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
