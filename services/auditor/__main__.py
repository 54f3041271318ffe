"""`python -m services.auditor`: run the auditor process until SIGTERM."""

from services.stages import run_process

run_process("auditor")
