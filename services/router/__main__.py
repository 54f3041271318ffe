"""`python -m services.router`: run the router process until SIGTERM."""

from services.stages import run_process

run_process("router")
