"""`python -m services.stitcher`: run the stitcher process until SIGTERM."""

from services.stages import run_process

run_process("stitcher")
