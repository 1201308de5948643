"""The Modelvault client: governed downloads into a verified, content-addressed
cache, pushes, and model listings.

Invariants a reader must keep:

- a file becomes visible (in the cache's ``blobs/``, a snapshot or a
  ``local_dir``) only after its SHA-256 matched the version's manifest;
- a cached file is hashed again every time a snapshot uses it: a changed
  blob is deleted and fetched again, never trusted;
- partial downloads live in ``partial/`` and resume with ``Range``; a lock
  file per blob keeps two processes from writing the same partial file;
- the token is sent only to the configured server (never to a presigned
  URL), and never appears in an exception or ``repr``.
"""

from __future__ import annotations

import base64
import fcntl
import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import ssl
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native
from ._errors import (
    IntegrityError,
    ModelvaultError,
    NotFound,
    from_response,
)

# Read size of downloads and hashing: 1 MiB measured steadier than 4 MiB
# (larger buffers fall out of the allocator's heap into fresh mappings).
_CHUNK = 1024 * 1024
# The CLI's default server.
DEFAULT_URL = "http://127.0.0.1:8780"
_DEFAULT_TIMEOUT = 60.0

PatternsT = Union[str, Sequence[str], None]


@dataclass(frozen=True)
class FileInfo:
    """One file of a version."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class VersionInfo:
    """A committed version (``Client.model_info``)."""

    namespace: str
    model: str
    version: str
    files: List[FileInfo]
    uploader: str
    created_at: str
    sensitivity: str
    tags: Dict[str, str] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)
    version_metadata: Dict[str, str] = field(default_factory=dict)
    approvals: List[Dict[str, Any]] = field(default_factory=list)
    deployments: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """``NS/NAME@VERSION``."""
        return f"{self.namespace}/{self.model}@{self.version}"


@dataclass(frozen=True)
class ModelSummary:
    """A model (``Client.list_models``)."""

    namespace: str
    name: str
    sensitivity: str
    owner: str
    created_at: str
    tags: Dict[str, str] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, m: Dict[str, Any]) -> "ModelSummary":
        """From the server's model view."""
        return cls(
            namespace=m["namespace"],
            name=m["name"],
            sensitivity=m["sensitivity"],
            owner=m["owner"],
            created_at=m["created_at"],
            tags=m.get("tags", {}),
            metadata=m.get("metadata", {}),
        )


RECEIPT_HEADER = "Modelvault-Receipt"


def verify_receipt(receipt: str, public_key: Union[bytes, str]) -> Dict[str, Any]:
    """Checks a decision receipt (``Client.receipts``, the
    ``Modelvault-Receipt`` header, a line of ``.modelvault-receipts``)
    against the audit public key (raw 32 bytes or its hex) and returns its
    claims: ``request_id``, ``principal``, ``action``, ``environment``,
    ``namespace``, ``model``, ``version``, ``manifest_sha256``, ``file``,
    ``file_sha256``, ``decisions``, ``time``, ``audit`` (``chain``,
    ``seq``). Raises :class:`IntegrityError` when it does not verify."""
    key = bytes.fromhex(public_key) if isinstance(public_key, str) else bytes(public_key)
    try:
        claims = _native.verify_receipt(receipt, key)
    except ValueError as e:
        raise IntegrityError(str(e)) from None
    return json.loads(claims)


def parse_ref(ref: str) -> Tuple[str, str, str]:
    """``NS/NAME@VERSION`` (``@latest`` when the version is left out)."""
    name_part, _, version = ref.partition("@")
    ns, sep, name = name_part.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ValueError(f"{ref!r}: expected NS/NAME@VERSION")
    return ns, name, version or "latest"


def _segment(s: str) -> str:
    # The server's encoding (modelvault_api::paths::segment).
    return urllib.parse.quote(s, safe="*-._")


def _file_path(p: str) -> str:
    return "/".join(_segment(s) for s in p.split("/"))


def _version_path(ns: str, name: str, version: str) -> str:
    return f"/v1/models/{_segment(ns)}/{_segment(name)}/versions/{_segment(version)}"


def _matches(path: str, patterns: PatternsT) -> bool:
    if patterns is None:
        return True
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _safe_relative(p: str) -> Path:
    parts = p.split("/")
    if not p or p.startswith("/") or any(s in ("", ".", "..") for s in parts) or "\\" in p:
        raise IntegrityError(f"server named an unsafe file path {p!r}; refusing")
    return Path(*parts)


def default_cache_dir() -> Path:
    """``$MODELVAULT_CACHE``, else ``$XDG_CACHE_HOME/modelvault``, else
    ``~/.cache/modelvault``."""
    env = os.environ.get("MODELVAULT_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "modelvault"


def _config_dir() -> str:
    """The CLI's config directory: ``$MODELVAULT_CONFIG_DIR``, else the
    platform's (``~/Library/Application Support/modelvault`` on macOS,
    ``$XDG_CONFIG_HOME/modelvault`` or ``~/.config/modelvault`` elsewhere)."""
    env = os.environ.get("MODELVAULT_CONFIG_DIR")
    if env:
        return env
    if sys.platform == "darwin":
        return os.path.join(Path.home(), "Library", "Application Support", "modelvault")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return os.path.join(xdg, "modelvault")


def _profile() -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """``(url, token, ca_cert)`` of the CLI profile in effect
    (``MODELVAULT_PROFILE``, else the one named ``default``) from
    ``config.toml`` in the CLI's config directory; all ``None`` when there
    is none (or Python lacks ``tomllib``, before 3.11)."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:
        return None, None, None
    base = _config_dir()
    try:
        with open(os.path.join(base, "config.toml"), "rb") as f:
            profiles = tomllib.load(f).get("profiles", {})
    except (OSError, ValueError):
        return None, None, None
    name = os.environ.get("MODELVAULT_PROFILE") or "default"
    p = profiles.get(name)
    if p is None:
        if os.environ.get("MODELVAULT_PROFILE"):
            raise ModelvaultError(f"no CLI profile {name!r} in {base}/config.toml")
        return None, None, None
    return p.get("url"), p.get("token"), p.get("ca_cert")


def _same_server(a: str, b: str) -> bool:
    ua, ub = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    port = {"http": 80, "https": 443}
    return (
        ua.scheme == ub.scheme
        and ua.hostname == ub.hostname
        and (ua.port or port.get(ua.scheme)) == (ub.port or port.get(ub.scheme))
        and ua.path.rstrip("/") == ub.path.rstrip("/")
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def _drain(resp: "_Response", sink: Any) -> Tuple[int, str]:
    """Reads the body into ``sink`` (a native FileSink, which hashes and
    writes on its own thread without the GIL, so receiving, hashing and
    writing overlap as in the CLI) and returns its ``(size, sha256)``."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    try:
        while True:
            n = resp.raw.readinto(buf)
            if not n:
                break
            sink.write(view[:n])
    except BaseException:
        try:
            sink.finish()
        except Exception:
            pass
        raise
    return sink.finish()


class _Response:
    """An open response; ``read_into`` streams the body."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        self._conn = conn
        self.raw = resp
        self.status = resp.status
        self.headers = resp.headers

    def json(self) -> Any:
        try:
            return json.loads(self.raw.read())
        finally:
            self.close()

    def close(self) -> None:
        self.raw.close()
        self._conn.close()


class Client:
    """A client of one Modelvault server.

    ``url`` and ``token`` default to ``MODELVAULT_URL`` and
    ``MODELVAULT_TOKEN``, then to the CLI profile in effect, then (the URL)
    to the CLI's default, ``http://127.0.0.1:8780``. ``ca_cert`` (default
    ``MODELVAULT_CA_CERT``, then the profile's) is a PEM file of CA
    certificates to trust besides the system's. ``timeout`` (seconds)
    bounds connecting and each read.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = _DEFAULT_TIMEOUT,
        *,
        ca_cert: Optional[str] = None,
    ) -> None:
        url = url or os.environ.get("MODELVAULT_URL")
        token = token or os.environ.get("MODELVAULT_TOKEN")
        ca_cert = ca_cert or os.environ.get("MODELVAULT_CA_CERT")
        p_url, p_token, p_ca = _profile()
        if not url:
            url = p_url or DEFAULT_URL
        # A profile's token (and CA) go only to the server it was stored for.
        if p_url and _same_server(p_url, url):
            token = token or p_token
            ca_cert = ca_cert or p_ca
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelvaultError(f"{url!r}: expected http(s)://host[:port]")
        self.url = url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/")
        self.__token = token
        self.timeout = timeout
        #: Signed decision receipts of every release this client received
        #: (one per file download, one per key release), oldest first: compact
        #: JWS strings; check them with :func:`verify_receipt`.
        self.receipts: List[str] = []
        self._ssl = ssl.create_default_context(cafile=ca_cert) if ca_cert else None

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, token={'<set>' if self.__token else None})"

    # --- HTTP -----------------------------------------------------------

    def _connect(self, scheme: str, host: str, port: Optional[int]) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self._ssl or ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        absolute: bool = False,
    ) -> _Response:
        """Sends a request; raises the typed error for a 4xx/5xx answer
        (416 is returned to the caller)."""
        h = dict(headers or {})
        if absolute:
            # A presigned URL: no token.
            u = urllib.parse.urlsplit(path)
            conn = self._connect(u.scheme, u.hostname or "", u.port)
            target = u.path + (f"?{u.query}" if u.query else "")
        else:
            conn = self._connect(self._scheme, self._host, self._port)
            target = self._base + path
            if self.__token:
                h["Authorization"] = f"Bearer {self.__token}"
        try:
            conn.request(method, target, body=body, headers=h)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            where = "a presigned URL" if absolute else self.url
            raise ModelvaultError(f"{method} {where}: {e}") from None
        r = _Response(conn, resp)
        if resp.status >= 400 and resp.status != 416:
            data = resp.read()
            r.close()
            raise from_response(resp.status, data, resp.headers.get("x-request-id"))
        return r

    def _get_json(self, path: str) -> Any:
        return self._send("GET", path, headers={"Accept": "application/json"}).json()

    def _post_json(self, path: str, payload: Any) -> Any:
        return self._send(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        ).json()

    # --- reads ------------------------------------------------------------

    def model_info(self, ref: str) -> VersionInfo:
        """The version ``ref`` names (``latest`` and ``deployed-ENV``
        resolved) with its files, sizes and SHA-256s."""
        ns, name, version = parse_ref(ref)
        d = self._get_json(_version_path(ns, name, version))
        return VersionInfo(
            namespace=d["namespace"],
            model=d["model"],
            version=d["version"],
            files=[FileInfo(f["path"], int(f["size"]), f["sha256"]) for f in d["files"]],
            uploader=d["uploader"],
            created_at=d["created_at"],
            sensitivity=d["sensitivity"],
            tags=d.get("tags", {}),
            metadata=d.get("metadata", {}),
            version_metadata=d.get("version_metadata", {}),
            approvals=d.get("approvals", []),
            deployments=d.get("deployments", []),
        )

    def list_models(self, namespace: Optional[str] = None) -> List[ModelSummary]:
        """The models the caller can read (in ``namespace`` only, if given)."""
        q = f"?namespace={_segment(namespace)}" if namespace else ""
        d = self._get_json(f"/v1/models{q}")
        return [
            ModelSummary.from_json(m)
            for m in d["models"]
        ]

    # --- snapshot ---------------------------------------------------------

    def snapshot_download(
        self,
        ref: str,
        *,
        cache_dir: Union[str, Path, None] = None,
        local_dir: Union[str, Path, None] = None,
        allow_patterns: PatternsT = None,
        client_side: bool = False,
    ) -> Path:
        """Downloads the files of ``ref`` (``NS/NAME@VERSION``; ``latest``
        and ``deployed-ENV`` allowed) and returns the folder that holds them.

        Every file is verified against its SHA-256 before it becomes
        visible. Files go into a content-addressed cache (``cache_dir``,
        default :func:`default_cache_dir`) shared by all versions; a second
        call transfers nothing. Without ``local_dir`` the answer is a
        snapshot folder of links into the cache; with it, the files are
        copied there. An interrupted download resumes with ``Range``.

        ``client_side=True`` asks for the version's key sealed to an
        ephemeral key (needs ``key-release``), fetches the stored
        ciphertext and decrypts here.
        """
        info = self.model_info(ref)
        files = [f for f in info.files if _matches(f.path, allow_patterns)]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        blobs = cache / "blobs" / "sha256"
        partial = cache / "partial"
        blobs.mkdir(parents=True, exist_ok=True)
        partial.mkdir(parents=True, exist_ok=True)
        targets = {f.path: _safe_relative(f.path) for f in files}

        missing: List[FileInfo] = []
        for f in files:
            blob = blobs / f.sha256
            if blob.exists() and not self._cached_ok(blob, f):
                blob.unlink(missing_ok=True)
            if not blob.exists():
                missing.append(f)
        if missing:
            if client_side:
                self._fetch_client_side(info, missing, blobs, partial)
            else:
                for f in missing:
                    self._fetch_server_side(info, f, blobs / f.sha256, partial)

        if local_dir is not None:
            out = Path(local_dir)
            for f in files:
                dest = out / targets[f.path]
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.modelvault-tmp")
                shutil.copyfile(blobs / f.sha256, tmp)
                os.replace(tmp, dest)
            return out

        server = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        snap = cache / "snapshots" / server / info.namespace / info.model / info.version
        for f in files:
            dest = snap / targets[f.path]
            dest.parent.mkdir(parents=True, exist_ok=True)
            rel = os.path.relpath(blobs / f.sha256, dest.parent)
            if dest.is_symlink() and os.readlink(dest) == rel:
                continue
            tmp = dest.with_name(f".{dest.name}.modelvault-tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.symlink(rel, tmp)
            except OSError:
                shutil.copyfile(blobs / f.sha256, tmp)
            os.replace(tmp, dest)
        return snap

    def download(
        self,
        ref: str,
        filename: str,
        *,
        local_path: Union[str, Path, None] = None,
        cache_dir: Union[str, Path, None] = None,
        info: Optional[VersionInfo] = None,
    ) -> Path:
        """Downloads one file of ``ref`` (verified, through the cache) and
        returns its path: the cached copy, or ``local_path`` when given (a
        copy). ``info`` (from :meth:`model_info`) saves the lookup."""
        info = info or self.model_info(ref)
        f = next((x for x in info.files if x.path == filename), None)
        if f is None:
            raise NotFound(f"{info.ref} has no file {filename!r}")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        blobs = cache / "blobs" / "sha256"
        partial = cache / "partial"
        blobs.mkdir(parents=True, exist_ok=True)
        partial.mkdir(parents=True, exist_ok=True)
        blob = blobs / f.sha256
        if blob.exists() and not self._cached_ok(blob, f):
            blob.unlink(missing_ok=True)
        if not blob.exists():
            self._fetch_server_side(info, f, blob, partial)
        if local_path is None:
            return blob
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.modelvault-tmp")
        shutil.copyfile(blob, tmp)
        os.replace(tmp, dest)
        return dest

    def _keep_receipt(self, receipt: Optional[str]) -> None:
        if receipt:
            self.receipts.append(receipt)

    def audit_public_key(self) -> bytes:
        """The server's audit signing key (raw Ed25519), which signs
        receipts and audit checkpoints. Pin a copy kept away from the
        server rather than fetching it each time."""
        return bytes.fromhex(self._get_json("/v1/audit/public-key")["public_key"])

    @staticmethod
    def _cached_ok(blob: Path, f: FileInfo) -> bool:
        try:
            return blob.stat().st_size == f.size and _sha256_file(blob) == f.sha256
        except OSError:
            return False

    def _fetch_server_side(self, info: VersionInfo, f: FileInfo, blob: Path, partial: Path) -> None:
        """Downloads one file through the governed download route into
        ``blob``, resuming a partial file left by an interrupted call."""
        part = partial / f"{f.sha256}.part"
        with open(partial / f"{f.sha256}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if blob.exists():
                return  # another process finished it while we waited
            for _attempt in (1, 2):
                size, digest = self._download_into(info, f, part)
                if size == f.size and digest == f.sha256:
                    os.replace(part, blob)
                    return
                # A partial file that does not verify is not resumed again.
                part.unlink(missing_ok=True)
            raise IntegrityError(
                f"{info.ref}: {f.path} does not match its SHA-256 after two downloads; nothing kept"
            )

    def _download_into(self, info: VersionInfo, f: FileInfo, part: Path) -> Tuple[int, str]:
        """Fetches what ``part`` lacks of the file (all of it, or the rest
        with ``Range``) and returns the whole part's size and SHA-256. The
        bytes are hashed and written by a native thread as they arrive (the
        kept prefix is hashed first)."""
        offset = part.stat().st_size if part.exists() else 0
        if offset > f.size:
            part.unlink()
            offset = 0
        path = _version_path(info.namespace, info.model, info.version) + "/files/" + _file_path(f.path)
        if offset == f.size and f.size > 0:
            return _native.FileSink(str(part), append=True).finish()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._send("GET", path, headers=headers)
        try:
            if resp.status == 416 or (resp.status == 200 and offset):
                # A stale partial, or the server sent the whole file: start over.
                if resp.status == 416:
                    resp.close()
                    resp = self._send("GET", path)
                offset = 0
            self._keep_receipt(resp.headers.get(RECEIPT_HEADER))
            return _drain(resp, _native.FileSink(str(part), append=bool(offset)))
        finally:
            resp.close()

    def _fetch_client_side(
        self, info: VersionInfo, files: List[FileInfo], blobs: Path, partial: Path
    ) -> None:
        """One key release for the version; each file's ciphertext is
        fetched (presigned on S3) and opened here with the released DEK."""
        key = _native.ReleaseKey()
        rel = self._post_json(
            _version_path(info.namespace, info.model, info.version) + "/key-release",
            {"public_key": base64.b64encode(key.public_key()).decode()},
        )
        dek = key.open(
            base64.b64decode(rel["enc"]),
            base64.b64decode(rel["sealed_dek"]),
            rel["request_id"],
            rel["namespace"],
            rel["model"],
            rel["version"],
            int(rel["dek_generation"]),
        )
        del key
        self._keep_receipt(rel.get("receipt"))
        wanted = {f.path: f for f in files}
        for r in rel["files"]:
            f = wanted.get(r["path"])
            if f is None:
                continue
            if r["sha256"] != f.sha256 or int(r["size"]) != f.size:
                raise IntegrityError(f"{info.ref}: the key release lists {f.path} differently")
            opener = _native.FileOpener(
                dek,
                rel["namespace"],
                rel["model"],
                rel["version"],
                f.path,
                int(rel["dek_generation"]),
                int(r["ciphertext_size"]),
                r["salt"],
            )
            part = partial / f"{f.sha256}.client-part"
            resp = self._send("GET", r["url"], absolute=bool(r.get("presigned")))
            try:
                size, digest = _drain(resp, opener.sink_to(str(part)))
            except _native.DecryptError as e:
                part.unlink(missing_ok=True)
                raise IntegrityError(f"{info.ref}: {f.path}: {e}") from None
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            finally:
                resp.close()
            if size != f.size or digest != f.sha256:
                part.unlink(missing_ok=True)
                raise IntegrityError(f"{info.ref}: {f.path} does not match its SHA-256; nothing kept")
            os.replace(part, blobs / f.sha256)
        for f in files:
            if not (blobs / f.sha256).exists():
                raise IntegrityError(f"{info.ref}: the key release did not list {f.path}")

    # --- writes -------------------------------------------------------------

    def create_model(
        self,
        ref: str,
        *,
        sensitivity: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
    ) -> ModelSummary:
        """Creates the model ``NS/NAME`` (a version in ``ref`` is ignored)."""
        ns, name, _ = parse_ref(ref)
        body: Dict[str, Any] = {"namespace": ns, "name": name, "tags": tags or {}}
        if sensitivity is not None:
            body["sensitivity"] = sensitivity
        return ModelSummary.from_json(self._post_json("/v1/models", body))

    def push(
        self,
        ref: str,
        directory: Union[str, Path],
        *,
        allow_patterns: PatternsT = None,
        path_in_version: Optional[str] = None,
    ) -> VersionInfo:
        """Uploads the files under ``directory`` (those matching
        ``allow_patterns``; ``.git/`` and ``__pycache__/`` are skipped) as
        version ``ref`` and commits it; with ``path_in_version`` they go
        under that folder of the version. The model must exist."""
        root = Path(directory)
        if not root.is_dir():
            raise ModelvaultError(f"{root}: not a directory")
        prefix = (path_in_version or "").strip("/")
        files = [
            (f"{prefix}/{rel}" if prefix else rel, full)
            for rel, full in sorted(self._walk(root, allow_patterns))
        ]
        if not files:
            raise ModelvaultError(f"{root}: no files to push")
        return self.push_files(ref, files)

    def push_files(self, ref: str, files: Sequence[Tuple[str, Union[str, Path]]]) -> VersionInfo:
        """Uploads ``(path in version, local file)`` pairs as version ``ref``
        and commits it (the version is then immutable)."""
        ns, name, version = parse_ref(ref)
        vpath = _version_path(ns, name, version)
        listed = []
        for rel, full in files:
            full = Path(full)
            size = full.stat().st_size
            digest = _sha256_file(full)
            with open(full, "rb") as body:
                up = self._send(
                    "PUT",
                    vpath + "/files/" + _file_path(rel),
                    body=body,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                ).json()
            if up.get("sha256") != digest or int(up.get("size", -1)) != size:
                raise IntegrityError(f"{rel}: the server received other bytes than were sent")
            listed.append({"path": rel, "size": size, "sha256": digest})
        self._post_json(vpath + "/commit", {"files": listed})
        return self.model_info(f"{ns}/{name}@{version}")

    @staticmethod
    def _walk(root: Path, patterns: PatternsT) -> Iterable[Tuple[str, Path]]:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git", "__pycache__"))
            for fn in filenames:
                full = Path(dirpath) / fn
                if not full.is_file():
                    continue
                rel = full.relative_to(root).as_posix()
                if _matches(rel, patterns):
                    yield rel, full
