"""The one exception hierarchy of provisioning."""


class ProvisioningError(Exception):
    """Identity or enrollment is missing or broken; the message says what to do."""
