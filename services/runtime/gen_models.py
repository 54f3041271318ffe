"""Former path of services.wire.gen_models, kept for the documented `python -m services.runtime.gen_models`
and for code outside this repository; new code imports services.wire.gen_models."""

import sys

from services.wire.gen_models import *  # noqa: F403
from services.wire.gen_models import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
