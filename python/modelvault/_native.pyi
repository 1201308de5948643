"""Type stubs of the native module (Rust, PyO3)."""

class DecryptError(Exception): ...

def verify_receipt(receipt: str, public_key: bytes) -> bytes: ...

class Dek:
    """A released data key, opaque to Python; zeroized when dropped."""

class ReleaseKey:
    """An ephemeral X25519 key for one key release."""

    def __init__(self) -> None: ...
    def public_key(self) -> bytes: ...
    def open(
        self,
        enc: bytes,
        sealed_dek: bytes,
        request_id: str,
        namespace: str,
        model: str,
        version: str,
        dek_generation: int,
    ) -> Dek: ...

class FileOpener:
    """Opens one file's ciphertext as it arrives."""

    def __init__(
        self,
        dek: Dek,
        namespace: str,
        model: str,
        version: str,
        path: str,
        dek_generation: int,
        ciphertext_size: int,
        salt_hex: str,
    ) -> None: ...
    def update(self, chunk: bytes) -> bytes: ...
    def sink_to(self, path: str) -> FileSink: ...
    def finish(self) -> None: ...

class FileSink:
    """Hashes and writes a download on a native thread, without the GIL."""

    def __init__(self, path: str, append: bool = False) -> None: ...
    def write(self, chunk: bytes | bytearray | memoryview) -> None: ...
    def finish(self) -> tuple[int, str]: ...
