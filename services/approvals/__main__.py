"""`python -m services.approvals`: run the approvals process until SIGTERM."""

from services.stages import run_process

run_process("approvals")
