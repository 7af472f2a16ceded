"""The three files of one mutual-TLS identity, shared by the clients, the broker and the configuration."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from mqtt.errors import MqttError


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    """The agency CA that signed the other side's certificate."""
    cert_file: Path
    """This side's certificate; for a client its CN is its identity at the broker."""
    key_file: Path
    """This side's private key (unencrypted PEM)."""


def _encrypted_key(*_: object) -> bytes:
    # Without this OpenSSL would prompt for a pass phrase on the terminal of a service that has none.
    raise MqttError("the key is encrypted; the recorder needs an unencrypted key file (mode 0600)")


def check_client_files(files: TlsFiles) -> None:
    """Load each file once on its own, so that a failure names the file it is about.

    paho's tls_set loads certificate, key and CA in one go and reports OpenSSL's reason without a
    file name, and a handshake failure later, in paho's network thread, is not reported at all.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for label, path in (("CA", files.ca_file), ("certificate", files.cert_file), ("key", files.key_file)):
        if not path.is_file():
            raise MqttError(f"TLS {label} file {path} does not exist")
    try:
        context.load_verify_locations(cafile=str(files.ca_file))
    except (ssl.SSLError, OSError) as err:
        raise MqttError(f"TLS CA file {files.ca_file} is not a readable PEM certificate: {err}") from err
    try:
        context.load_cert_chain(str(files.cert_file), str(files.key_file), password=_encrypted_key)
    except MqttError as err:
        raise MqttError(f"TLS key file {files.key_file}: {err}") from err
    except (ssl.SSLError, OSError) as err:
        raise MqttError(f"TLS certificate {files.cert_file} and key {files.key_file} are not a readable PEM "
                        f"certificate with its own private key: {err}") from err
