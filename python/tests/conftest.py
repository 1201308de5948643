"""A real Modelvault server for the Python tests: `modelvault init` and
`modelvault serve` of the binary `cargo test` built (``MODELVAULT_BIN``,
default ``target/debug/modelvault``), on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MODELVAULT_BIN", str(ROOT / "target" / "debug" / "modelvault"))


class Server:
    def __init__(
        self,
        data: Path,
        extra_config: str = "",
        edit: Optional[Callable[[str], str]] = None,
        admin: Optional[str] = None,
    ) -> None:
        if admin is None:
            out = subprocess.run(
                [BIN, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True
            )
            admin = out.stdout.strip()
        # With `admin` given, the data directory is an existing server's.
        self.admin = admin
        config = data / "modelvault.toml"
        if edit is not None:
            config.write_text(edit(config.read_text()))
        if extra_config:
            with open(config, "a") as f:
                f.write(extra_config)
        self.data = data
        self.log: List[str] = []
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MODELVAULT_LOG": "info", "MODELVAULT_LOG_FORMAT": "text"},
        )
        found = threading.Event()
        self.url = ""

        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on (\S+)", line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(60):
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url + "/readyz") as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)

    def cli(self, *args: str, token: Optional[str] = None, check: bool = True) -> str:
        env = {**os.environ, "MODELVAULT_URL": self.url, "MODELVAULT_TOKEN": token or self.admin}
        out = subprocess.run([BIN, *args], capture_output=True, text=True, env=env)
        if check and out.returncode != 0:
            raise AssertionError(f"modelvault {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def run(self, *args: str, token: Optional[str] = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "MODELVAULT_URL": self.url, "MODELVAULT_TOKEN": token or self.admin}
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env)

    def token(self, name: str, roles: List[str], namespaces: List[str], env: str = "dev") -> str:
        args = ["token", "create", "--name", name, "--env", env, "--principal", name]
        for r in roles:
            args += ["--role", r]
        for n in namespaces:
            args += ["--namespace", n]
        return self.cli(*args).strip()

    def audit(self) -> List[dict]:
        """Every audit record, as `modelvault audit export` gives them."""
        out = self.cli("audit", "export")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server") / "data")
    yield s
    s.stop()


def make_files(root: Path, files: dict) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


class CuttingProxy:
    """A loopback TCP proxy that breaks the first connection whose answer
    passes `cut_after` bytes (a network drop mid-file; 0: never), then
    passes everything through, at most `rate` bytes/s if given."""

    def __init__(self, upstream: str, cut_after: int, rate: int = 0) -> None:
        import socket
        import threading
        import urllib.parse

        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.cut_after = cut_after
        self.rate = rate  # bytes per second of answers, 0: unlimited
        self.cut = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True), daemon=True).start()

    def _pump(self, src, dst, answer: bool) -> None:
        import socket

        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if answer and self.cut_after and not self.cut.is_set() and sent + len(data) > self.cut_after:
                    dst.sendall(data[: self.cut_after - sent])
                    self.cut.set()
                    break
                dst.sendall(data)
                sent += len(data)
                if answer and self.rate:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.sock.close()
