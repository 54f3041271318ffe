"""`python -m services.answerer`: run the answerer process until SIGTERM."""

from services.stages import run_process

run_process("answerer")
