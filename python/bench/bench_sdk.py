"""Bench (not a test): the SDK's snapshot_download against the CLI's `pull`
of the same version, in the same run, on one server; and client-side mode
against server-side mode.

    python python/bench/bench_sdk.py            # 1 GiB, 3 rounds
    MODELVAULT_BENCH_MIB=256 MODELVAULT_BENCH_ROUNDS=5 python python/bench/bench_sdk.py

Needs the SDK installed (`pip install ./python`) and a built binary
(MODELVAULT_BIN, default target/release/modelvault, else target/debug).
Each round runs every mode once, starting from a different mode each
round, into fresh directories and a fresh cache; figures are medians, and ratios are what to compare (the
machines are shared and noisy).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "tests"))
if "MODELVAULT_BIN" not in os.environ:
    rel = ROOT / "target" / "release" / "modelvault"
    os.environ["MODELVAULT_BIN"] = str(rel if rel.exists() else ROOT / "target" / "debug" / "modelvault")

import modelvault  # noqa: E402
from conftest import BIN, Server  # noqa: E402


def main() -> None:
    mib = int(os.environ.get("MODELVAULT_BENCH_MIB", "1024"))
    rounds = int(os.environ.get("MODELVAULT_BENCH_ROUNDS", "3"))
    work = Path(tempfile.mkdtemp(prefix="mv-bench-"))
    server = Server(work / "data")
    try:
        src = work / "src"
        src.mkdir()
        with open(src / "model.bin", "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(mib):
                f.write(block)
        admin_env = {**os.environ, "MODELVAULT_URL": server.url, "MODELVAULT_TOKEN": server.admin}
        writer = server.token("bench-writer", ["data-scientist"], ["bench"])
        server.cli("model", "create", "bench/big", token=writer)
        server.cli("push", "bench/big@v1", str(src), token=writer)
        shutil.rmtree(src)
        reader = server.token("bench-reader", ["data-scientist"], ["bench"])
        engineer = server.token("bench-engineer", ["ml-engineer"], ["bench"])

        def cli_pull(token: str, extra: list) -> None:
            out = work / "out"
            env = {**admin_env, "MODELVAULT_TOKEN": token}
            subprocess.run(
                [BIN, "pull", "bench/big@v1", "--output-dir", str(out), *extra],
                check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

        def sdk(token: str, client_side: bool) -> None:
            modelvault.Client(server.url, token).snapshot_download(
                "bench/big@v1", cache_dir=work / "cache", client_side=client_side
            )

        modes = {
            "cli pull": lambda: cli_pull(reader, []),
            "sdk snapshot_download": lambda: sdk(reader, False),
            "cli pull --client-side": lambda: cli_pull(engineer, ["--client-side"]),
            "sdk snapshot_download client_side": lambda: sdk(engineer, True),
        }
        only = os.environ.get("MODELVAULT_BENCH_MODES")
        if only:
            modes = {m: f for m, f in modes.items() if m in only.split(",")}
        times: dict = {m: [] for m in modes}
        names = list(modes)
        for r in range(rounds):
            # Each round starts with another mode, so no mode always runs
            # right after the same neighbour (page cache, writeback).
            for name in names[r % len(names) :] + names[: r % len(names)]:
                run = modes[name]
                shutil.rmtree(work / "out", ignore_errors=True)
                shutil.rmtree(work / "cache", ignore_errors=True)
                # Every run starts from a settled disk: the previous run's
                # deletes and writeback are not charged to the next one.
                os.sync()
                time.sleep(1)
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        gb = mib * (1 << 20) / 1e9
        med = {m: statistics.median(v) for m, v in times.items()}
        for m, v in med.items():
            print(f"{m:36s} median {v:6.2f} s  {gb / v:5.2f} GB/s  (runs: {', '.join(f'{x:.2f}' for x in times[m])})")
        for label, num, den in [
            ("sdk snapshot_download / cli pull", "cli pull", "sdk snapshot_download"),
            ("sdk client_side / sdk server-side", "sdk snapshot_download", "sdk snapshot_download client_side"),
            ("sdk client_side / cli pull --client-side", "cli pull --client-side", "sdk snapshot_download client_side"),
        ]:
            if num in med and den in med:
                print(f"{label} (throughput ratio): {med[num] / med[den]:.2f}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
