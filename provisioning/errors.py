"""Errors of provisioning: identities, keys and certificates."""

from evidence.errors import RecorderError


class ProvisioningError(RecorderError):
    """Identity or enrollment is missing or broken; the message says what to do."""
