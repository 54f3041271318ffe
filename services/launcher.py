"""Starts the chain's processes (five stages, the telemetry writer, the health app and the dashboard) as child
processes, waits until each reports ready on /healthz, and stops them with SIGTERM. Used by the demo, the
benchmark and the tests; in production each process is started on its own (`switchyard run <stage>`, one
Deployment per stage)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.stages import CHAIN, FUSED, NO_HTTP, PROCESSES

_NOTEWORTHY = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Error:", "Exception")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Launcher:
    """The running processes, by key "name/replica"."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, replica: str = "0") -> str:
        key = f"{name}/{replica}"
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "services.cli", "run", name, "--replica", replica, "--http-port", str(port)]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with (self.log_dir / f"{name}-{replica}.log").open("ab") as log:  # the child keeps its own descriptor
            self.processes[key] = subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.ports[key] = port
        return key

    def start_all(self, timeout_s: float = 90.0, *, fused: bool = False, replicas: int = 1) -> None:
        """Every process; with `fused`, the five stages as one process (`chain`) in place of five; `replicas` of each
        stage (or of the fused chain), sharing their consumer groups, and one of every other process."""
        names = [FUSED, *(name for name in PROCESSES if name not in CHAIN)] if fused else PROCESSES
        for name in names:
            for replica in range(replicas if name in (FUSED, *CHAIN) else 1):
                self.start(name, str(replica))
        for key in list(self.processes):
            self.wait_ready(key, timeout_s)

    def url(self, key: str = "dashboard/0") -> str:
        """The base URL of a process's HTTP server: /healthz and /metrics, or the dashboard's pages."""
        return f"http://127.0.0.1:{self.ports[key]}/"

    def healthz(self, key: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[key]}/healthz", timeout=2) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()
        except OSError as error:
            return 0, str(error)

    def log_tail(self, key: str, lines: int = 20) -> str:
        name, replica = key.split("/")
        path = self.log_dir / f"{name}-{replica}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def report(self, lines: int = 8) -> str:
        """Each process's state (running, or its exit code) and its log's warnings and errors (the last `lines`
        of them): what a failed test or a failed start shows, so that the failure explains itself."""
        parts = []
        for key, process in sorted(self.processes.items()):
            code = process.poll()
            state = "running" if code is None else f"exited with {code}"
            noted = [line for line in self.log_tail(key, 2000).splitlines() if any(w in line for w in _NOTEWORTHY)][
                -lines:
            ]
            parts.append(f"{key}: {state}" + "".join(f"\n    {line[:400]}" for line in noted))
        return "\n".join(parts)

    def _exited(self, key: str) -> RuntimeError:
        tail = self.log_tail(key)
        return RuntimeError(f"{key} exited with {self.processes[key].returncode}; see {self.log_dir}:\n{tail}")

    def wait_ready(self, key: str, timeout_s: float = 90.0) -> None:
        """Until the process answers 200 on /healthz. The port was free when it was handed out, but another
        process's socket can take it before the child binds it: a process that exits with "address already in
        use" is started again on a fresh port (three times at most)."""
        if key.split("/")[0] in NO_HTTP:
            time.sleep(1.0)  # no /healthz: alive after a second is the best available sign
            if self.processes[key].poll() is not None:
                raise self._exited(key)
            return
        deadline, restarts = time.monotonic() + timeout_s, 0
        while time.monotonic() < deadline:
            if self.processes[key].poll() is not None:
                if restarts < 3 and "address already in use" in self.log_tail(key).lower():
                    restarts += 1
                    self.start(*key.split("/"))
                    continue
                raise self._exited(key)
            if self.healthz(key)[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"{key} not ready after {timeout_s}s: {self.healthz(key)}; see {self.log_dir}:\n{self.log_tail(key)}"
        )

    def kill(self, key: str, sig: int = signal.SIGKILL) -> int:
        process = self.processes.pop(key)
        process.send_signal(sig)
        return process.wait(60)

    def stop_all(self, grace_s: float = 60.0) -> dict[str, int]:
        """SIGTERM to all at once, then wait; a process past the grace period is killed."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for key, process in self.processes.items():
            try:
                codes[key] = process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[key] = process.wait()
        self.processes.clear()
        return codes
