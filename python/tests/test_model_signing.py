"""OpenSSF model signatures made by the real `model_signing` CLI (PyPI
`model-signing`), pushed with a version, verified by the server at commit
against the signer keys its namespace trusts, and required by the bundled
sensitivity-environment policy for restricted models in production."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server, make_files

MODEL_SIGNING = Path(
    os.environ.get("MODELVAULT_MODEL_SIGNING")
    or shutil.which("model_signing")
    or Path(sys.executable).parent / "model_signing"
)

if os.environ.get("MODELVAULT_REQUIRE_MODEL_SIGNING") == "1":
    assert MODEL_SIGNING.exists(), "model_signing is not installed (scripts/test.sh installs it)"
pytestmark = pytest.mark.skipif(not MODEL_SIGNING.exists(), reason="model_signing not installed")

FILES = {
    "config.json": b'{"layers": 2}',
    "weights/model.safetensors": os.urandom(300_000),
    "tokenizer.txt": b"a\nb\n",
}


def ec_key(d: Path, name: str) -> Path:
    key = d / f"{name}.key"
    subprocess.run(
        f"openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out {key}",
        shell=True,
        check=True,
    )
    subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(d / f"{name}.pub")],
                   check=True, capture_output=True)
    return key


def sign(model: Path, key: Path) -> None:
    out = subprocess.run(
        [str(MODEL_SIGNING), "sign", "key", str(model), "--private_key", str(key),
         "--signature", str(model / "model.sig")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    d = tmp_path_factory.mktemp("signing")
    trusted, other = ec_key(d, "trusted"), ec_key(d, "other")

    def edit(text: str) -> str:
        return text.replace(
            "[policy.config.sensitivity-environment]\n",
            '[policy.config.sensitivity-environment]\nrequire_signature = "restricted:production"\n',
        )

    server = Server(
        d / "data",
        edit=edit,
        extra_config=(
            "\n[model_signing]\n[[model_signing.trusted_keys]]\n"
            f'name = "release-key"\nnamespaces = ["sig"]\npublic_key = "{d / "trusted.pub"}"\n'
        ),
    )
    writer = server.token("sig-writer", ["data-scientist"], ["sig"])
    tokens = {
        "writer": writer,
        "mia": server.token("mia", ["model-manager"], ["sig"], env="production"),
        "max": server.token("max", ["model-manager"], ["sig"], env="production"),
        "carol": server.token("carol", ["ml-engineer"], ["sig"], env="production"),
    }

    def push(name: str, key, tamper: bool = False) -> None:
        src = d / name
        make_files(src, FILES)
        if key is not None:
            sign(src, key)
        if tamper:
            (src / "config.json").write_bytes(b'{"layers": 3}')
        server.cli("model", "create", f"sig/{name}", "--sensitivity", "restricted", token=writer)
        server.cli("push", f"sig/{name}@1", str(src), token=writer)
        for m in ("mia", "max"):
            server.cli("approve", f"sig/{name}@1", "--env", "production", token=tokens[m])

    push("good", trusted)
    push("tampered", trusted, tamper=True)
    push("untrusted", other)
    push("unsigned", None)
    yield server, tokens
    server.stop()


def download(server: Server, token: str, model: str) -> subprocess.CompletedProcess:
    return server.run("pull", f"sig/{model}@1", "-o", str(Path(server.data).parent / f"out-{model}-{os.getpid()}"),
                      "--force", token=token)


def signature_fact(server: Server, model: str) -> dict:
    for r in reversed(server.audit()):
        res = r.get("resource") or {}
        if r.get("input") and res.get("model") == model:
            return r["input"]["resource"]["facts"].get("signature")
    raise AssertionError(f"no decision on {model} in the audit trail")


def test_a_trusted_signature_whose_digests_match_lets_a_restricted_model_into_production(signed):
    server, t = signed
    out = download(server, t["carol"], "good")
    assert out.returncode == 0, out.stderr
    assert signature_fact(server, "good") == {
        "method": "key", "signer": "release-key", "trusted": True, "files_match": True,
    }
    shown = json.loads(server.cli("model", "show", "sig/good@1", "--output", "json", token=t["carol"]))
    assert shown["signature"] == {
        "file": "model.sig", "method": "key", "signer": "release-key", "trusted": True, "files_match": True,
    }


def test_a_file_changed_after_signing_is_refused(signed):
    server, t = signed
    out = download(server, t["carol"], "tampered")
    assert out.returncode == 4, out.stderr
    assert "sensitivity-environment.unsigned" in out.stderr
    assert "digests match" in out.stderr
    fact = signature_fact(server, "tampered")
    assert fact["trusted"] is True and fact["files_match"] is False
    shown = json.loads(server.cli("model", "show", "sig/tampered@1", "--output", "json", token=t["carol"]))
    assert shown["signature"]["files_match"] is False
    assert "config.json: digest differs" in shown["signature"]["detail"]
    assert "files DO NOT match" in server.cli("model", "show", "sig/tampered@1", token=t["carol"])


def test_a_signer_the_namespace_does_not_trust_is_refused(signed):
    server, t = signed
    out = download(server, t["carol"], "untrusted")
    assert out.returncode == 4, out.stderr
    assert "signer is not trusted" in out.stderr
    fact = signature_fact(server, "untrusted")
    assert fact == {"method": "key", "signer": "", "trusted": False, "files_match": False}


def test_an_unsigned_restricted_model_is_refused_in_production(signed):
    server, t = signed
    out = download(server, t["carol"], "unsigned")
    assert out.returncode == 4, out.stderr
    assert "the version has none" in out.stderr
    assert signature_fact(server, "unsigned") is None


def test_the_model_signing_cli_agrees(signed, tmp_path):
    """The verdicts above are the ones the signer's own tool gives."""
    server, t = signed
    d = Path(server.data).parent
    ok = subprocess.run([str(MODEL_SIGNING), "verify", "key", str(d / "good"), "--signature",
                         str(d / "good" / "model.sig"), "--public_key", str(d / "trusted.pub")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(MODEL_SIGNING), "verify", "key", str(d / "tampered"), "--signature",
                          str(d / "tampered" / "model.sig"), "--public_key", str(d / "trusted.pub")],
                         capture_output=True, text=True)
    assert bad.returncode != 0


def test_removing_a_signer_key_withdraws_the_trust_of_what_it_signed(signed):
    """Trust is the commit-time verdict and the key still being configured."""
    server, t = signed
    assert download(server, t["carol"], "good").returncode == 0
    server.stop()
    config = Path(server.data) / "modelvault.toml"
    text = config.read_text()
    config.write_text(text[: text.index("[model_signing]")])
    again = Server(Path(server.data), admin=server.admin)
    try:
        out = download(again, t["carol"], "good")
        assert out.returncode == 4, out.stderr
        assert "signer is not trusted" in out.stderr
        shown = json.loads(again.cli("model", "show", "sig/good@1", "--output", "json", token=t["carol"]))
        assert shown["signature"]["trusted"] is False
    finally:
        again.stop()
