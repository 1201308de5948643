"""The Python SDK (`import modelvault`, installed with `pip install ./python`)
against a real server."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import modelvault
from conftest import CuttingProxy, make_files

FILES = {
    "config.json": b'{"hidden_size": 8}',
    "weights/model.safetensors": os.urandom(2 * 1024 * 1024 + 3),
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}


@pytest.fixture(scope="module")
def sdk(server, tmp_path_factory):
    src = tmp_path_factory.mktemp("sdk-src")
    make_files(src, FILES)
    writer = server.token("sdk-writer", ["data-scientist"], ["sdk"])
    server.cli("model", "create", "sdk/ranker", token=writer)
    server.cli("push", "sdk/ranker@v1", str(src), token=writer)
    (src / "config.json").write_bytes(b'{"hidden_size": 16}')
    server.cli("push", "sdk/ranker@v2", str(src), token=writer)
    server.cli("model", "create", "sdk/secret", "--sensitivity", "confidential", token=writer)
    server.cli("push", "sdk/secret@v1", str(src), token=writer)
    return {
        "src": src,
        "writer": writer,
        "reader": server.token("sdk-reader", ["data-scientist"], ["sdk"]),
        "engineer": server.token("sdk-engineer", ["ml-engineer"], ["sdk"]),
    }


def intents(server, model: str, action: str = "download"):
    return [
        r
        for r in server.audit()
        if r.get("type") == "intent"
        and r.get("action") == action
        and (r.get("resource") or {}).get("model") == model
    ]


def tree(p: Path) -> dict:
    return {f.relative_to(p).as_posix(): f.read_bytes() for f in p.rglob("*") if f.is_file()}


def test_client_reads_the_environment_and_hides_the_token(server, sdk, monkeypatch):
    monkeypatch.setenv("MODELVAULT_URL", server.url)
    monkeypatch.setenv("MODELVAULT_TOKEN", sdk["reader"])
    c = modelvault.Client()
    assert c.url == server.url
    assert sdk["reader"] not in repr(c)
    assert [m.name for m in c.list_models("sdk")] == ["ranker", "secret"]
    # Without MODELVAULT_URL (and no profile): the CLI's default server.
    monkeypatch.delenv("MODELVAULT_URL")
    monkeypatch.setenv("MODELVAULT_CONFIG_DIR", "/nonexistent")
    assert modelvault.Client().url == "http://127.0.0.1:8780"
    with pytest.raises(modelvault.ModelvaultError):
        modelvault.Client("ftp://example.com")


def test_snapshot_is_verified_cached_and_shared_between_versions(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["reader"])
    cache = tmp_path / "cache"
    before = len(intents(server, "ranker"))
    p = c.snapshot_download("sdk/ranker@v1", cache_dir=cache)
    assert tree(p) == FILES
    assert len(intents(server, "ranker")) == before + 3
    # A second call transfers nothing.
    assert c.snapshot_download("sdk/ranker@v1", cache_dir=cache) == p
    assert len(intents(server, "ranker")) == before + 3
    # v2 differs only in config.json: only that file is fetched.
    p2 = c.snapshot_download("sdk/ranker@latest", cache_dir=cache)
    assert tree(p2)["config.json"] == b'{"hidden_size": 16}'
    fetched = intents(server, "ranker")[before + 3 :]
    assert [r["resource"]["file"] for r in fetched] == ["config.json"]
    # Content-addressed: one blob per distinct content.
    assert len(list((cache / "blobs" / "sha256").iterdir())) == 4


def test_local_dir_and_allow_patterns(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["reader"])
    out = c.snapshot_download(
        "sdk/ranker@v1",
        cache_dir=tmp_path / "cache",
        local_dir=tmp_path / "out",
        allow_patterns=["weights/*", "*.json"],
    )
    assert out == tmp_path / "out"
    assert tree(out) == {k: v for k, v in FILES.items() if k != "tokenizer/vocab.txt"}
    assert not any(f.is_symlink() for f in out.rglob("*"))


def test_a_tampered_cached_file_is_fetched_again_not_trusted(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["reader"])
    cache = tmp_path / "cache"
    p = c.snapshot_download("sdk/ranker@v1", cache_dir=cache)
    blob = cache / "blobs" / "sha256" / hashlib.sha256(FILES["config.json"]).hexdigest()
    blob.chmod(0o644)
    blob.write_bytes(b'{"hidden_size": 9999}')
    before = len(intents(server, "ranker"))
    p = c.snapshot_download("sdk/ranker@v1", cache_dir=cache)
    assert (p / "config.json").read_bytes() == FILES["config.json"]
    again = intents(server, "ranker")[before:]
    assert [r["resource"]["file"] for r in again] == ["config.json"]


def test_a_client_killed_mid_file_resumes_with_range(server, sdk, tmp_path):
    data = os.urandom(24 * 1024 * 1024)
    src = tmp_path / "big"
    make_files(src, {"big.bin": data})
    server.cli("model", "create", "sdk/big", token=sdk["writer"])
    server.cli("push", "sdk/big@v1", str(src), token=sdk["writer"])
    cache = tmp_path / "cache"
    # Slow the answer down so the client is surely mid-file when killed.
    proxy = CuttingProxy(server.url, cut_after=0, rate=4 * 1024 * 1024)
    script = textwrap.dedent(
        f"""
        import modelvault
        modelvault.Client({proxy.url!r}, {sdk['reader']!r}).snapshot_download(
            "sdk/big@v1", cache_dir={str(cache)!r})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    part = cache / "partial" / f"{hashlib.sha256(data).hexdigest()}.part"
    deadline = time.time() + 60
    while time.time() < deadline and (not part.exists() or part.stat().st_size < 4 * 1024 * 1024):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    proxy.close()
    kept = part.stat().st_size
    assert 0 < kept < len(data), kept
    p = modelvault.Client(server.url, sdk["reader"]).snapshot_download("sdk/big@v1", cache_dir=cache)
    assert (p / "big.bin").read_bytes() == data
    assert not part.exists()
    ranges = [r["resource"]["range"] for r in intents(server, "big")]
    assert ranges[-1] == f"{kept}-{len(data)}", ranges


def test_client_side_mode_decrypts_here(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["engineer"])
    before = len(intents(server, "ranker", "key-release"))
    p = c.snapshot_download("sdk/ranker@v1", cache_dir=tmp_path / "cache", client_side=True)
    assert tree(p) == FILES
    assert len(intents(server, "ranker", "key-release")) == before + 1
    # Without key-release: the role gate says no.
    with pytest.raises(modelvault.PermissionDenied) as e:
        modelvault.Client(server.url, sdk["reader"]).snapshot_download(
            "sdk/ranker@v1", cache_dir=tmp_path / "c2", client_side=True
        )
    assert not isinstance(e.value, modelvault.PolicyDenied)
    assert e.value.status == 403


def test_client_side_mode_refuses_a_tampered_blob(server, sdk, tmp_path):
    src = tmp_path / "t"
    make_files(src, {"w.bin": os.urandom(300_000)})
    server.cli("model", "create", "sdk/tamper", token=sdk["writer"])
    server.cli("push", "sdk/tamper@v1", str(src), token=sdk["writer"])
    blobs = [
        b
        for b in (server.data / "store" / "blobs" / "sdk" / "tamper").rglob("*.mvf")
    ]
    assert len(blobs) == 1
    raw = bytearray(blobs[0].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    blobs[0].write_bytes(bytes(raw))
    cache = tmp_path / "cache"
    with pytest.raises(modelvault.IntegrityError) as e:
        modelvault.Client(server.url, sdk["engineer"]).snapshot_download(
            "sdk/tamper@v1", cache_dir=cache, client_side=True
        )
    # The server hands out the stored ciphertext as it is; the SDK's AEAD
    # check (the same modelvault-format code) refuses it.
    assert isinstance(e.value, modelvault.IntegrityError), e.value
    assert "failed authentication" in str(e.value)
    assert not list((cache / "blobs" / "sha256").iterdir()), "nothing of it becomes visible"


def test_push_model_info_and_round_trip(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["writer"])
    src = tmp_path / "src"
    make_files(src, {**FILES, ".git/HEAD": b"ref", "__pycache__/x.pyc": b"x", "notes.md": b"n"})
    info = c.push("sdk/ranker@v3", src, allow_patterns=["*.json", "weights/*", "tokenizer/*", ".git/*"])
    assert info.ref == "sdk/ranker@v3"
    assert sorted(f.path for f in info.files) == sorted(FILES)
    assert {f.path: f.sha256 for f in info.files} == {
        k: hashlib.sha256(v).hexdigest() for k, v in FILES.items()
    }
    shown = modelvault.Client(server.url, sdk["reader"]).model_info("sdk/ranker@latest")
    assert shown.version == "v3" and shown.uploader == "sdk-writer"
    out = tmp_path / "pulled"
    server.cli("pull", "sdk/ranker@v3", "--output-dir", str(out), token=sdk["reader"])
    # The files, and the pull's receipts (one per file) beside them.
    receipts = (out / ".modelvault-receipts").read_text().split()
    assert len(receipts) == len(FILES)
    (out / ".modelvault-receipts").unlink()
    assert tree(out) == FILES
    with pytest.raises(modelvault.Conflict):
        c.push("sdk/ranker@v3", src)


def test_typed_errors(server, sdk, tmp_path):
    with pytest.raises(modelvault.AuthenticationError) as e:
        modelvault.Client(server.url, "mv_not_a_token").model_info("sdk/ranker@v1")
    assert e.value.status == 401
    reader = modelvault.Client(server.url, sdk["reader"])
    with pytest.raises(modelvault.PolicyDenied) as d:
        reader.snapshot_download("sdk/secret@v1", cache_dir=tmp_path / "c")
    assert d.value.plugin == "sensitivity-environment"
    assert d.value.reason_code and d.value.reason_code.startswith("sensitivity-environment.")
    assert "sensitivity-environment" in str(d.value)
    with pytest.raises(modelvault.NotFound):
        reader.model_info("sdk/nope@v1")
    with pytest.raises(modelvault.NotFound):
        modelvault.Client(server.url, server.token("sdk-other", ["data-scientist"], ["else"])).model_info(
            "sdk/ranker@v1"
        )
    src = tmp_path / "g"
    make_files(src, {"a": b"a"})
    server.cli("push", "sdk/ranker@doomed", str(src), token=sdk["writer"])
    server.cli("delete", "sdk/ranker@doomed", "--yes")
    with pytest.raises(modelvault.Gone):
        reader.model_info("sdk/ranker@doomed")
    with pytest.raises(ValueError):
        reader.model_info("no-slash")


def test_the_cli_profile_is_read_and_its_token_stays_with_its_server(server, sdk, tmp_path, monkeypatch):
    import subprocess

    from conftest import BIN

    monkeypatch.delenv("MODELVAULT_URL", raising=False)
    monkeypatch.delenv("MODELVAULT_TOKEN", raising=False)
    monkeypatch.setenv("MODELVAULT_CONFIG_DIR", str(tmp_path))
    subprocess.run(
        [BIN, "profile", "set", "work", "--url", server.url, "--token-stdin"],
        input=sdk["reader"], text=True, check=True,
        env={**os.environ, "MODELVAULT_CONFIG_DIR": str(tmp_path)},
    )
    monkeypatch.setenv("MODELVAULT_PROFILE", "work")
    assert modelvault.Client().model_info("sdk/ranker@v1").version == "v1"
    # Another server named in MODELVAULT_URL: the profile's token is not sent.
    monkeypatch.setenv("MODELVAULT_URL", "http://127.0.0.1:9")
    assert "<set>" not in repr(modelvault.Client())


def test_downloads_and_key_releases_hand_back_signed_receipts(server, sdk, tmp_path):
    c = modelvault.Client(server.url, sdk["engineer"])
    key = c.audit_public_key()
    assert len(key) == 32
    out = c.snapshot_download("sdk/ranker@v1", cache_dir=tmp_path / "cache", local_dir=tmp_path / "out")
    assert len(c.receipts) == len(FILES)
    claims = [modelvault.verify_receipt(r, key) for r in c.receipts]
    assert sorted(x["file"] for x in claims) == sorted(FILES)
    for x in claims:
        assert x["action"] == "download"
        assert x["principal"]["id"] == "sdk-engineer"
        assert (x["namespace"], x["model"], x["version"]) == ("sdk", "ranker", "v1")
        assert x["file_sha256"] == hashlib.sha256(FILES[x["file"]]).hexdigest()
        assert {d["plugin"] for d in x["decisions"]} >= {"sensitivity-environment"}
        assert isinstance(x["audit"]["seq"], int)
    listing = "".join(f"{hashlib.sha256(FILES[p]).hexdigest()}  {p}\n" for p in sorted(FILES))
    assert claims[0]["manifest_sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert tree(out) == FILES
    # Kept in a file, one per line, the CLI verifies them and the trail holds
    # each one's record.
    kept = tmp_path / "receipts"
    kept.write_text("".join(r + "\n" for r in c.receipts))
    (tmp_path / "audit.pub").write_text(key.hex())
    server.cli("receipt", "verify", str(kept), "--public-key", str(tmp_path / "audit.pub"))
    server.cli("audit", "verify", "--receipts", str(kept))
    # A cache hit releases nothing and gets no receipt.
    c.snapshot_download("sdk/ranker@v1", cache_dir=tmp_path / "cache")
    assert len(c.receipts) == len(FILES)
    # A key release carries one too.
    c.snapshot_download("sdk/ranker@v1", cache_dir=tmp_path / "cache2", client_side=True)
    release = modelvault.verify_receipt(c.receipts[-1], key.hex())
    assert release["action"] == "key-release"
    assert release["manifest_sha256"] == claims[0]["manifest_sha256"]
    # Forged or foreign: refused.
    h, p, s = c.receipts[0].split(".")
    with pytest.raises(modelvault.IntegrityError):
        modelvault.verify_receipt(f"{h}.{c.receipts[1].split('.')[1]}.{s}", key)
    with pytest.raises(modelvault.IntegrityError):
        modelvault.verify_receipt(c.receipts[0], bytes(32))
