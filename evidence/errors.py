"""The product's one exception root, and the evidence core's errors beneath it.

Every package's errors derive from `RecorderError`, so the CLI catches one class, names the problem and
what to do, and exits non-zero; a library's errors are translated at the boundary (`raise … from err`).
"""


class RecorderError(Exception):
    """Something a person must act on; the message says what is wrong and what to do."""


class EvidenceError(RecorderError):
    """An entry, key, file or session does not meet the format (docs/FORMAT.md)."""


class MalformedEntry(EvidenceError):
    """An entry's bytes are not a well-formed, canonical ledger entry; the message names what is wrong."""


class DecryptionError(EvidenceError):
    """A sealed segment cannot be opened: wrong key, or its bytes were changed."""


class StorageFault(RecorderError):
    """A write or fsync failed. Nothing is retried silently; the caller decides what is lost and says so."""


class ConfigError(RecorderError):
    """A configuration field is unknown, missing or has a bad value; the message names the field."""
