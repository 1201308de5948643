"""MLflow (mlflow-skinny, the version pinned in scripts/test.sh) logging and
loading a model through `modelvault://` against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
if os.environ.get("MODELVAULT_REQUIRE_MLFLOW") == "1":
    assert mlflow.__version__ == "3.18.0", mlflow.__version__

import mlflow.pyfunc  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

MARKER = "MLFLOW-PLAINTEXT-MARKER-7f3c9e"


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [42 for _ in range(len(model_input))]


@pytest.fixture()
def tracking(server, tmp_path, monkeypatch):
    token = server.token(f"ml-{os.urandom(3).hex()}", ["data-scientist"], ["ml"])
    monkeypatch.setenv("MODELVAULT_URL", server.url)
    monkeypatch.setenv("MODELVAULT_TOKEN", token)
    # A cache of this test's own: every read below reaches the server.
    monkeypatch.setenv("MODELVAULT_CACHE", str(tmp_path / "mv-cache"))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield token
    mlflow.set_tracking_uri(None)


def store_bytes(server) -> bytes:
    out = b""
    for p in (server.data / "store").rglob("*"):
        if p.is_file():
            out += p.read_bytes()
    return out


def test_log_load_predict_encrypted_and_audited(server, tracking, tmp_path):
    server.cli("model", "create", "ml/ranker", token=tracking)
    exp = mlflow.create_experiment("ranker", artifact_location="modelvault://ml/ranker")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "notes.txt").write_text(MARKER)
    with mlflow.start_run(experiment_id=exp) as run:
        logged = mlflow.pyfunc.log_model(name="model", python_model=Constant())
        mlflow.log_artifacts(str(extra), artifact_path="docs")
    run_id = run.info.run_id

    # The logged model is a committed Modelvault version named by its id.
    model_version = logged.model_id.lower()
    shown = server.cli("model", "show", f"ml/ranker@{model_version}", "--output", "json", token=tracking)
    assert "MLmodel" in shown
    # Loading it back: through MLflow's own URI and through modelvault://.
    for uri in (logged.model_uri, f"modelvault://ml/ranker@{model_version}"):
        model = mlflow.pyfunc.load_model(uri)
        assert list(model.predict([[1], [2], [3]])) == [42, 42, 42]

    # The run's own artifacts are the version named by the run id.
    listed = mlflow.artifacts.list_artifacts(run_id=run_id)
    assert [f.path for f in listed] == ["docs"]
    got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="docs/notes.txt", dst_path=str(tmp_path / "dl")))
    assert got.read_text() == MARKER
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"modelvault://ml/ranker@{run_id}", dst_path=str(tmp_path / "dl2")))
    assert (got / "docs" / "notes.txt").read_text() == MARKER

    # Encrypted at rest: the marker appears nowhere in the store.
    assert MARKER.encode() not in store_bytes(server)
    # Every read went through the governed download, in the audit trail.
    downloads = [
        r for r in server.audit()
        if r.get("action") == "download" and r.get("type") == "intent"
        and (r.get("resource") or {}).get("model") == "ranker"
    ]
    files = {r["resource"]["file"] for r in downloads}
    assert "MLmodel" in files and "docs/notes.txt" in files, files
    assert all(r["outcome"] == "allowed" for r in downloads)

    # A second log into the same (committed) run version is refused clearly.
    with mlflow.start_run(run_id=run_id):
        with pytest.raises(MlflowException, match="immutable"):
            mlflow.log_artifacts(str(extra), artifact_path="more")


def test_a_denial_names_the_plugin_and_reason(server, tracking, tmp_path):
    server.cli("model", "create", "ml/secret", "--sensitivity", "confidential", token=tracking)
    exp = mlflow.create_experiment("secret", artifact_location="modelvault://ml/secret")
    with mlflow.start_run(experiment_id=exp):
        logged = mlflow.pyfunc.log_model(name="model", python_model=Constant())
    with pytest.raises(MlflowException) as e:
        mlflow.pyfunc.load_model(f"modelvault://ml/secret@{logged.model_id.lower()}")
    text = str(e.value)
    assert "sensitivity-environment" in text and "reason code sensitivity-environment." in text, text
    denied = [
        r for r in server.audit()
        if r.get("action") == "download" and r.get("outcome") == "denied"
        and (r.get("resource") or {}).get("model") == "secret"
    ]
    assert denied


def test_latest_and_bad_uris(server, tracking, tmp_path):
    server.cli("model", "create", "ml/latest", token=tracking)
    exp = mlflow.create_experiment("latest", artifact_location="modelvault://ml/latest")
    with mlflow.start_run(experiment_id=exp):
        mlflow.pyfunc.log_model(name="model", python_model=Constant())
    model = mlflow.pyfunc.load_model("modelvault://ml/latest@latest")
    assert list(model.predict([[0]])) == [42]
    with pytest.raises(MlflowException):
        mlflow.artifacts.download_artifacts(artifact_uri="modelvault://ml/latest@nope", dst_path=str(tmp_path))
