"""Typed exceptions. Every error the SDK raises is a ModelvaultError."""

from __future__ import annotations

from typing import Optional


class ModelvaultError(Exception):
    """Base of every SDK error.

    ``status`` is the HTTP status (``None`` for errors found on this side)
    and ``code`` the server's stable error code (``None`` likewise).
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id


class AuthenticationError(ModelvaultError):
    """401: no token, or the token is invalid, expired or revoked."""


class PermissionDenied(ModelvaultError):
    """403 from the role gate: the principal lacks the permission."""


class PolicyDenied(PermissionDenied):
    """403 from the policy chain.

    ``plugin`` names the policy that decided (``None`` when none allowed),
    ``reason_code`` is its reason code and ``message`` its explanation.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: Optional[str],
        reason_code: Optional[str],
        status: Optional[int] = 403,
        code: Optional[str] = "policy_denied",
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.plugin = plugin
        self.reason_code = reason_code

    def __str__(self) -> str:
        return f"policy denied by {self.plugin or 'no plugin'} ({self.reason_code}): {self.message}"


class NotFound(ModelvaultError):
    """404: no such model, version or file, or it is outside the caller's namespaces."""


class Conflict(ModelvaultError):
    """409: the version is already committed, or a concurrent change won."""


class Gone(ModelvaultError):
    """410: the version was deleted (crypto-shredded)."""


class IntegrityError(ModelvaultError):
    """Bytes that do not match their SHA-256, or ciphertext that fails to authenticate."""


def from_response(status: int, body: bytes, request_id: Optional[str]) -> ModelvaultError:
    """The exception for an error answer ``{"error": {"code", "message", ...}}``."""
    import json

    code: Optional[str] = None
    message = f"HTTP {status}"
    plugin: Optional[str] = None
    reason: Optional[str] = None
    try:
        err = json.loads(body or b"{}").get("error")
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message") or message
            plugin = err.get("plugin")
            reason = err.get("reason_code")
            request_id = err.get("request_id") or request_id
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        text = body.decode("utf-8", "replace").strip()
        if text:
            message = text[:500]
    kw = {"status": status, "code": code, "request_id": request_id}
    if status == 401:
        return AuthenticationError(message, **kw)
    if status == 403 and code == "policy_denied":
        return PolicyDenied(message, plugin=plugin, reason_code=reason, **kw)
    if status == 403:
        return PermissionDenied(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return Conflict(message, **kw)
    if status == 410:
        return Gone(message, **kw)
    return ModelvaultError(message, **kw)
