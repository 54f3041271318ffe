"""`python -m services.health`: run the provider health app (a faust worker) until SIGTERM."""

import sys

from services.health.app import main

if len(sys.argv) == 1:
    sys.argv += ["worker", "--loglevel", "warn", "--without-web"]
main()
