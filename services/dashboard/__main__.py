"""`python -m services.dashboard`: serve the dashboard until SIGTERM."""

import sys

from services.dashboard.app import main

sys.exit(main())
