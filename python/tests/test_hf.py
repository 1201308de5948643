"""The unmodified `huggingface_hub` client (the version pinned in
scripts/test.sh) against a real server's `/hf` endpoint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from conftest import CuttingProxy, make_files

FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}',
    "tokenizer.json": b'{"version": "1.0"}',
    "weights/model.safetensors": os.urandom(3 * 1024 * 1024 + 17),
    "weights/extra.bin": os.urandom(4096),
    "README.md": b"# tiny\n",
}


@pytest.fixture(scope="module")
def hub(server, tmp_path_factory):
    """Two versions of hf/tiny and a confidential model, and the tokens."""
    src = tmp_path_factory.mktemp("src")
    make_files(src, FILES)
    writer = server.token("hf-writer", ["data-scientist"], ["hf"])
    server.cli("model", "create", "hf/tiny", token=writer)
    server.cli("push", "hf/tiny@v1", str(src), token=writer)
    (src / "config.json").write_bytes(b'{"model_type": "bert", "hidden_size": 16}')
    server.cli("push", "hf/tiny@v2", str(src), token=writer)
    server.cli("model", "create", "hf/secret", "--sensitivity", "confidential", token=writer)
    server.cli("push", "hf/secret@v1", str(src), token=writer)
    reader = server.token("hf-reader", ["data-scientist"], ["hf"])
    outsider = server.token("hf-outsider", ["data-scientist"], ["elsewhere"])
    return {"src": src, "reader": reader, "outsider": outsider, "endpoint": server.url + "/hf"}


def downloads(server, model: str, file: str):
    return [
        r
        for r in server.audit()
        if r.get("action") == "download"
        and r.get("type") == "intent"
        and (r.get("resource") or {}).get("model") == model
        and (r.get("resource") or {}).get("file") == file
    ]


def test_version_checked(hub):
    assert huggingface_hub.__version__ == "2.4.0"


def test_snapshot_is_byte_exact_and_second_call_hits_the_cache(server, hub, tmp_path):
    cache = tmp_path / "cache"
    before = len(downloads(server, "tiny", "weights/model.safetensors"))
    p = Path(
        snapshot_download(
            "hf/tiny", revision="v1", endpoint=hub["endpoint"], token=hub["reader"], cache_dir=cache
        )
    )
    got = {str(f.relative_to(p)): f.read_bytes() for f in p.rglob("*") if f.is_file()}
    v1 = dict(FILES)
    assert got == v1
    # The HF cache layout: models--NS--NAME/snapshots/<commit>/...
    assert p.parent.parent.name == "models--hf--tiny"
    after_first = len(downloads(server, "tiny", "weights/model.safetensors"))
    assert after_first == before + 1
    # Second call: served from the cache, no file body transferred again.
    p2 = Path(
        snapshot_download(
            "hf/tiny", revision="v1", endpoint=hub["endpoint"], token=hub["reader"], cache_dir=cache
        )
    )
    assert p2 == p
    assert len(downloads(server, "tiny", "weights/model.safetensors")) == after_first


def test_latest_main_and_patterns_and_local_dir(hub, tmp_path):
    out = tmp_path / "local"
    p = snapshot_download(
        "hf/tiny",
        endpoint=hub["endpoint"],
        token=hub["reader"],
        local_dir=out,
        allow_patterns=["*.json"],
        ignore_patterns=["tokenizer*"],
    )
    assert Path(p) == out
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file() and ".cache" not in f.parts)
    assert files == ["config.json"]
    # `main` is `latest`: v2's config.
    assert (out / "config.json").read_bytes() == b'{"model_type": "bert", "hidden_size": 16}'


def test_single_file_in_a_subdirectory_and_revisions(hub, tmp_path):
    for rev in ("v1", "latest"):
        f = hf_hub_download(
            "hf/tiny",
            "weights/model.safetensors",
            revision=rev,
            endpoint=hub["endpoint"],
            token=hub["reader"],
            cache_dir=tmp_path / rev,
        )
        assert Path(f).read_bytes() == FILES["weights/model.safetensors"]


def test_model_info_and_list_repo_files(hub):
    api = HfApi(endpoint=hub["endpoint"], token=hub["reader"])
    info = api.model_info("hf/tiny", revision="v1", files_metadata=True)
    assert info.id == "hf/tiny"
    assert len(info.sha) == 40
    sizes = {s.rfilename: (s.size, s.lfs.sha256) for s in info.siblings}
    assert sizes == {k: (len(v), hashlib.sha256(v).hexdigest()) for k, v in FILES.items()}
    assert sorted(api.list_repo_files("hf/tiny", revision="v1")) == sorted(FILES)
    # The commit id is a revision too.
    assert api.model_info("hf/tiny", revision=info.sha).sha == info.sha
    other = api.model_info("hf/tiny", revision="v2")
    assert other.sha != info.sha


def test_head_and_range_headers(hub):
    import httpx2 as httpx

    url = f"{hub['endpoint']}/hf/tiny/resolve/v1/weights/model.safetensors"
    h = {"Authorization": f"Bearer {hub['reader']}"}
    head = httpx.head(url, headers=h)
    data = FILES["weights/model.safetensors"]
    assert head.status_code == 200
    assert head.headers["x-linked-size"] == str(len(data))
    assert head.headers["etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert len(head.headers["x-repo-commit"]) == 40
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    part = httpx.get(url, headers={**h, "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_a_download_broken_mid_file_resumes_with_range(server, hub, tmp_path):
    """The client's own resume: the connection drops after 12 MB of a
    24 MiB file (the client keeps what it read in 10 MiB chunks); it asks
    again with `Range` from where it stopped, and gets the rest."""
    data = os.urandom(24 * 1024 * 1024)
    src = tmp_path / "big"
    make_files(src, {"model.safetensors": data})
    writer = server.token("hf-big-writer", ["data-scientist"], ["hf"])
    server.cli("model", "create", "hf/big", token=writer)
    server.cli("push", "hf/big@v1", str(src), token=writer)
    proxy = CuttingProxy(server.url, cut_after=12_000_000)
    try:
        f = hf_hub_download(
            "hf/big",
            "model.safetensors",
            revision="v1",
            endpoint=proxy.url + "/hf",
            token=hub["reader"],
            cache_dir=tmp_path / "cache",
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert Path(f).read_bytes() == data
    intents = downloads(server, "big", "model.safetensors")
    ranges = [r["resource"]["range"] for r in intents]
    starts = [int(x.split("-")[0]) for x in ranges]
    assert starts[0] == 0 and starts[1] >= 10 * 1024 * 1024, ranges
    assert all(r["outcome"] == "allowed" for r in intents)


def test_policy_denial_reaches_the_caller_with_plugin_and_reason(hub, tmp_path):
    with pytest.raises(HfHubHTTPError) as e:
        hf_hub_download(
            "hf/secret",
            "config.json",
            revision="v1",
            endpoint=hub["endpoint"],
            token=hub["reader"],
            cache_dir=tmp_path,
        )
    assert e.value.response.status_code == 403
    text = str(e.value)
    assert "sensitivity-environment" in text and "reason code" in text, text


def test_not_found_errors_do_not_leak(hub, tmp_path):
    api = HfApi(endpoint=hub["endpoint"], token=hub["reader"])
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("hf/nope", revision="v1")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("hf/tiny", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("hf/tiny", revision="0" * 40)
    # A file the version lacks, in a version that exists.
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            "hf/tiny", "nope.bin", revision="v1", endpoint=hub["endpoint"],
            token=hub["reader"], cache_dir=tmp_path / "entry",
        )
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            "hf/tiny", "config.json", revision="v9", endpoint=hub["endpoint"],
            token=hub["reader"], cache_dir=tmp_path / "rev",
        )
    # Outside the token's namespaces: the same answer as a missing model.
    outsider = HfApi(endpoint=hub["endpoint"], token=hub["outsider"])
    with pytest.raises(RepositoryNotFoundError) as existing:
        outsider.model_info("hf/tiny", revision="v1")
    with pytest.raises(RepositoryNotFoundError) as missing:
        outsider.model_info("hf/nope", revision="v1")
    assert existing.value.response.status_code == missing.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "hf/tiny", "config.json", revision="v1", endpoint=hub["endpoint"],
            token=hub["outsider"], cache_dir=tmp_path,
        )


def test_no_write_routes(hub):
    import httpx2 as httpx

    h = {"Authorization": f"Bearer {hub['reader']}"}
    for method, path in [
        ("POST", "/api/models/hf/tiny/commit/main"),
        ("PUT", "/hf/tiny/resolve/v1/config.json"),
        ("DELETE", "/api/models/hf/tiny"),
        ("POST", "/api/repos/create"),
    ]:
        r = httpx.request(method, hub["endpoint"] + path, headers=h)
        assert r.status_code in (404, 405), (method, path, r.status_code)
