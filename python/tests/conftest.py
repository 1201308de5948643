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
from typing import Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MODELVAULT_BIN", str(ROOT / "target" / "debug" / "modelvault"))


class Server:
    def __init__(self, data: Path) -> None:
        out = subprocess.run(
            [BIN, "init", "--data-dir", str(data)], capture_output=True, text=True, check=True
        )
        self.admin = out.stdout.strip()
        self.data = data
        self.log: List[str] = []
        self.proc = subprocess.Popen(
            [BIN, "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MODELVAULT_LOG": "info"},
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
