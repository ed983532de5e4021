"""Fixtures: real `switchyard serve` nodes on loopback, started per test and
always stopped at its end."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # the package, without installing it

REPO = HERE.parent.parent.parent
BIN = Path(os.environ.get("SWITCHYARD_BIN", REPO / "bin" / "switchyard"))
API_KEY = "test-key"


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (gossip uses both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


class Node:
    """One `switchyard serve` subprocess."""

    def __init__(self, name: str, args: list, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.gossip = f"127.0.0.1:{free_port()}"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--listen", "127.0.0.1:0", "--gossip-bind", self.gossip,
             "--node-name", name, "--log-format", "json", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait for the URL in the log, then for GET /readyz 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            if not self.url:
                for line in self.log().splitlines():
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if rec.get("msg") == "serving" and rec.get("url"):
                        self.url = rec["url"]
            if self.url:
                try:
                    with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
                        if resp.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM: the node drains (closes its WebSockets with 1001)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_node(tmp_path, request):
    """start_node(*serve_flags, api_key=API_KEY) starts a node and waits
    until it is ready; every node started is stopped when the test ends."""
    nodes = []

    def start(*args: str, api_key: str = API_KEY) -> Node:
        name = f"n{len(nodes) + 1}"
        flags = list(args) + (["--api-key", api_key] if api_key else [])
        node = Node(name, flags, tmp_path / f"{name}.log")
        nodes.append(node)
        node.wait_ready()
        return node

    yield start
    for node in nodes:
        node.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for node in nodes:
            print(f"--- {node.name} log (last 40 lines) ---\n" + "\n".join(node.log().splitlines()[-40:]))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def mint_token(participant_id: str, secret: str, *sessions: str) -> str:
    """A participant token made by `switchyard token`."""
    args = [str(BIN), "token", "--participant-id", participant_id]
    for s in sessions:
        args += ["--session-id", s]
    env = dict(os.environ, SWITCHYARD_TOKEN_SECRET=secret)
    return subprocess.run(args, env=env, check=True, capture_output=True, text=True, timeout=30).stdout.strip()
