"""`python -m services.telemetry`: run the telemetry process until SIGTERM."""

from services.stages import run_process

run_process("telemetry")
