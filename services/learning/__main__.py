"""`python -m services.learning`: run the learning process (automatic rollback, optional auto-promotion)."""

from services.stages import run_process

run_process("learning")
