"""The `[mqtt]` section, shared by the device's and central's configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from evidence.errors import ConfigError
from evidence.settings import NonEmpty, Port, Positive, Range, Section
from mqtt.tls import TlsFiles


@dataclass(frozen=True)
class MqttConfig(Section):
    host: Annotated[str, NonEmpty()] = "127.0.0.1"
    port: Annotated[int, Port] = 1883
    topic_prefix: str = "recorders"
    keepalive: Annotated[int, Range(1, 65535)] = 30
    """Seconds between keep-alive pings; the broker declares the device offline after 1.5 times this."""
    retry_max_seconds: Annotated[float, Range(1, 3600)] = 30.0
    resend_seconds: Annotated[float, Positive] = 15.0
    """An entry without a receipt after this long is sent again (central stores duplicates once)."""
    tls: TlsFiles | None = None
    """[mqtt.tls] ca_file, cert_file, key_file: mutual TLS with this side's own certificate (a device's CN is
    its id, a receiver's its name); without the table, plain TCP."""

    def validate(self) -> None:
        prefix = self.topic_prefix
        if not prefix or any(c in prefix for c in "/+#") or prefix.startswith("$") or not prefix.isprintable():
            raise ConfigError(f"topic_prefix: {prefix!r} must be one topic level: no '/', '+', '#', not starting "
                              "with '$'")
        if self.tls is not None:
            for f in dataclasses.fields(self.tls):
                path = getattr(self.tls, f.name)
                if not path.is_file():
                    raise ConfigError(f"tls.{f.name}: {path} does not exist (or is not a file)")
