"""Modelvault's Python SDK: governed, verified and cached model downloads.

>>> import modelvault
>>> client = modelvault.Client()          # MODELVAULT_URL, MODELVAULT_TOKEN
>>> path = client.snapshot_download("nlp/ranker@deployed-prod")

Every download is the server's governed download (role gate, policy chain,
audit trail); files are verified against their SHA-256 before they become
visible. See docs/PYTHON-SDK.md.
"""

from ._client import (
    Client,
    FileInfo,
    ModelSummary,
    VersionInfo,
    default_cache_dir,
    parse_ref,
    verify_receipt,
)
from ._errors import (
    AuthenticationError,
    Conflict,
    Gone,
    IntegrityError,
    ModelvaultError,
    NotFound,
    PermissionDenied,
    PolicyDenied,
)

__all__ = [
    "AuthenticationError",
    "Client",
    "Conflict",
    "FileInfo",
    "Gone",
    "IntegrityError",
    "ModelSummary",
    "ModelvaultError",
    "NotFound",
    "PermissionDenied",
    "PolicyDenied",
    "VersionInfo",
    "default_cache_dir",
    "parse_ref",
    "verify_receipt",
]

__version__ = "0.1.0"
