"""The launcher's start-up: a process that loses its port to another socket before it binds is started again
on a fresh port; any other exit is an error that carries the end of the process's log."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import launcher as launcher_module
from services.launcher import Launcher

# serves 200 on every GET, on the port given as its argument; a taken port ends it with "Address already in use"
SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


class ScriptLauncher(Launcher):
    """The launcher with `python -c SCRIPT PORT` in place of `switchyard run NAME`."""

    script: str = SERVER

    def start(self, name: str, replica: str = "0") -> str:
        key = f"{name}/{replica}"
        port = launcher_module.free_port()
        log = (self.log_dir / f"{name}-{replica}.log").open("ab")
        command = [sys.executable, "-c", self.script, str(port)]
        self.processes[key] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.ports[key] = port
        return key


@pytest.fixture
def taken() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_process_whose_port_was_taken_is_started_again_on_a_fresh_one(
    tmp_path: Path, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = launcher_module.free_port
    handed = iter([taken])
    monkeypatch.setattr(launcher_module, "free_port", lambda: next(handed, None) or real())
    launcher = ScriptLauncher(tmp_path)
    key = launcher.start("web")
    assert launcher.ports[key] == taken
    try:
        launcher.wait_ready(key, timeout_s=30)
        assert launcher.ports[key] != taken
        assert launcher.healthz(key)[0] == 200
        assert "Address already in use" in (tmp_path / "web-0.log").read_text()
    finally:
        launcher.stop_all(grace_s=10)


def test_any_other_exit_is_an_error_with_the_end_of_the_log(tmp_path: Path) -> None:
    launcher = ScriptLauncher(tmp_path)
    launcher.script = "raise SystemExit('no keys topic: it-1234.gateway.keys')"
    key = launcher.start("gateway")
    with pytest.raises(RuntimeError, match=r"gateway/0 exited with 1(.|\n)*no keys topic: it-1234.gateway.keys"):
        launcher.wait_ready(key, timeout_s=30)
