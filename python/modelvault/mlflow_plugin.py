"""MLflow artifact repository for ``modelvault://`` URIs (registered through
the ``mlflow.artifact_repository`` entry point; docs/MLFLOW.md).

URIs:

- ``modelvault://NS/NAME`` as an experiment's artifact location: MLflow
  gives each run ``modelvault://NS/NAME/<run_id>/artifacts`` and each
  logged model (MLflow 3) ``modelvault://NS/NAME/models/<model_id>/artifacts``;
  their artifacts are the Modelvault version named ``<run_id>`` or
  ``<model_id>`` of model ``NS/NAME``;
- ``modelvault://NS/NAME@VERSION[/path]`` names an existing version
  (``latest`` and ``deployed-ENV`` allowed), read-only: for
  ``mlflow.artifacts.download_artifacts`` and ``mlflow.pyfunc.load_model``
  (MLflow splits such a URI into the repository ``modelvault://NS`` and the
  artifact path ``NAME@VERSION``; a namespace repository hands reads on to
  the version's).

Invariants a reader must keep:

- a version is immutable once committed: one ``log_artifact(s)`` call
  uploads and commits; a second call for the same run is refused with an
  ``MlflowException`` (log a run's files in one call, as ``log_model`` does);
- every read is the SDK's governed, verified, cached download; a
  Modelvault error (a policy denial above all) becomes an
  ``MlflowException`` whose message names the plugin and the reason code;
- credentials come from ``MODELVAULT_URL`` / ``MODELVAULT_TOKEN``.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository

from ._client import Client, VersionInfo
from ._errors import ModelvaultError, PolicyDenied

_VERSION = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def parse_uri(uri: str) -> Tuple[str, str, str, str, bool]:
    """``(namespace, model, version, path inside the version, read_only)``
    of a ``modelvault://`` URI."""
    if not uri.startswith("modelvault://"):
        raise MlflowException(f"{uri}: not a modelvault:// URI")
    rest = uri[len("modelvault://") :].strip("/")
    parts = [p for p in rest.split("/") if p]
    if len(parts) == 1:
        return parts[0], "", "", "", True  # a namespace: reads go to NAME@VERSION
    if len(parts) < 2:
        raise MlflowException(f"{uri}: expected modelvault://NS/NAME[@VERSION][/...]")
    ns, name = parts[0], parts[1]
    if "@" in name:
        name, version = name.split("@", 1)
        return ns, name, version, "/".join(parts[2:]), True
    tail = parts[2:]
    if "artifacts" in tail:
        i = tail.index("artifacts")
        if i == 0:
            raise MlflowException(f"{uri}: no run or model id before /artifacts")
        version, sub = tail[i - 1], tail[i + 1 :]
    elif tail:
        version, sub = tail[0], tail[1:]
    else:
        raise MlflowException(
            f"{uri}: names a model, not a version: use modelvault://NS/NAME@VERSION "
            "or set it as an experiment's artifact location"
        )
    version = version.lower()
    if not _VERSION.match(version):
        raise MlflowException(f"{uri}: {version!r} cannot be a Modelvault version name")
    return ns, name, version, "/".join(sub), False


def _mlflow_error(e: ModelvaultError) -> MlflowException:
    if isinstance(e, PolicyDenied):
        return MlflowException(
            f"Modelvault policy denied: plugin {e.plugin} (reason code {e.reason_code}): {e.message}"
        )
    return MlflowException(f"Modelvault: {e}")


class ModelvaultArtifactRepository(ArtifactRepository):
    """Artifacts of MLflow runs and logged models as Modelvault versions."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: Optional[str] = None,
        registry_uri: Optional[str] = None,
    ) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self.namespace, self.model, self.version, self.root, self.read_only = parse_uri(
            artifact_uri
        )
        try:
            self.client = Client()
        except ModelvaultError as e:
            raise _mlflow_error(e) from None
        self._info: Optional[VersionInfo] = None

    def _version_repo(self, path: Optional[str]) -> Tuple["ModelvaultArtifactRepository", str]:
        """For a namespace repository: the repository of the version the
        path starts with (``NAME@VERSION/...``) and the rest of the path."""
        first, _, rest = (path or "").strip("/").partition("/")
        if "@" not in first:
            raise MlflowException(
                f"{self.artifact_uri}/{path}: expected modelvault://NS/NAME@VERSION[/...]"
            )
        return ModelvaultArtifactRepository(f"modelvault://{self.namespace}/{first}"), rest

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.model}@{self.version}"

    def _full(self, path: Optional[str]) -> str:
        return posixpath.join(self.root, path) if path else self.root

    def _version(self) -> VersionInfo:
        if self._info is None:
            try:
                self._info = self.client.model_info(self.ref)
            except ModelvaultError as e:
                raise _mlflow_error(e) from None
        return self._info

    # --- writes -----------------------------------------------------------

    def _commit(self, files: List[Tuple[str, str]]) -> None:
        if self.read_only:
            raise MlflowException(f"{self.artifact_uri}: a version reference is read-only")
        if not files:
            return
        try:
            self._info = self.client.push_files(self.ref, files)
        except ModelvaultError as e:
            if e.status == 409:
                raise MlflowException(
                    f"Modelvault version {self.ref} is already committed (versions are "
                    "immutable): log a run's artifacts in one call"
                ) from None
            raise _mlflow_error(e) from None

    def log_artifact(self, local_file: str, artifact_path: Optional[str] = None) -> None:
        name = os.path.basename(local_file)
        self._commit([(self._full(posixpath.join(artifact_path or "", name)), local_file)])

    def log_artifacts(self, local_dir: str, artifact_path: Optional[str] = None) -> None:
        base = Path(local_dir)
        files = []
        for dirpath, _, filenames in os.walk(base):
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                rel = full.relative_to(base).as_posix()
                files.append((self._full(posixpath.join(artifact_path or "", rel)), str(full)))
        self._commit(files)

    # --- reads ------------------------------------------------------------

    def list_artifacts(self, path: Optional[str] = None) -> List[FileInfo]:
        if not self.model:
            repo, rest = self._version_repo(path)
            first = (path or "").strip("/").split("/")[0]
            return [
                FileInfo(posixpath.join(first, f.path), f.is_dir, f.file_size)
                for f in repo.list_artifacts(rest or None)
            ]
        try:
            info = self._version()
        except MlflowException:
            if not self.read_only:
                return []  # nothing logged yet
            raise
        prefix = self._full(path)
        prefix = prefix + "/" if prefix else ""
        out: dict = {}
        for f in info.files:
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix) :]
            first, _, more = rest.partition("/")
            rel_root = f.path[len(self.root) + 1 :] if self.root else f.path
            if more:
                d = posixpath.join(path or "", first)
                out[d] = FileInfo(d, True, None)
            else:
                out[rel_root] = FileInfo(rel_root, False, f.size)
        return sorted(out.values(), key=lambda fi: fi.path)

    def _is_directory(self, artifact_path: str) -> bool:
        full = self._full(artifact_path)
        info = self._version()
        return any(f.path.startswith(full + "/") for f in info.files) or (
            not full and bool(info.files)
        )

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        try:
            self.client.download(
                self.ref,
                self._full(remote_file_path),
                local_path=local_path,
                info=self._version(),
            )
        except ModelvaultError as e:
            raise _mlflow_error(e) from None

    def download_artifacts(self, artifact_path: str, dst_path: Optional[str] = None) -> str:
        if not self.model:
            repo, rest = self._version_repo(artifact_path)
            return repo.download_artifacts(rest, dst_path)
        # Resolve the version once, so a denial or a missing version is one
        # clear error rather than one per file.
        self._version()
        if dst_path is None:
            dst_path = tempfile.mkdtemp()
        return super().download_artifacts(artifact_path, dst_path)

    def delete_artifacts(self, artifact_path: Optional[str] = None) -> None:
        raise MlflowException(
            "Modelvault versions are deleted by crypto-shredding: use `modelvault delete NS/NAME@VERSION`"
        )
