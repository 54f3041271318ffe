"""`python -m services.governor`: run the governor process until SIGTERM."""

from services.stages import run_process

run_process("governor")
