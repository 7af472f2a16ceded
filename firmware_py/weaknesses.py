"""What makes a configuration unsafe for a real room, in one place (NO-LEAK, TAMPER-PROOF-IT).

Broken settings are errors when the configuration is read (firmware_py/config.py: two buttons on one pin,
the tally on a button's pin, …). These are settings that work but leave evidence exposed: plain MQTT, no
central key to seal recordings to, no central key to check receipts with, and `hal.backend = "auto"` on a
Raspberry Pi (a missing camera library would quietly make it a simulator). `recorder run --check-config`
lists them; on the `pi` backend the service refuses to start with any of them unless the configuration says
it is a lab set-up (`device.lab_setup = true`); on the simulator they are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_py.config import Config


@dataclass(frozen=True)
class Weakness:
    field: str
    what: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.field}: {self.what}; {self.remedy}"


def weaknesses(config: Config, on_raspberry_pi: bool) -> list[Weakness]:
    found = []
    if config.mqtt.tls is None:
        found.append(Weakness("mqtt.tls", "plain MQTT: anyone on the network can read what the box sends, and the "
                              "broker cannot tell this box from an impostor",
                              "enroll it (recorder enroll) or set [mqtt.tls] ca_file, cert_file and key_file"))
    if not config.device.central_public_key:
        found.append(Weakness("device.central_public_key", "recordings are stored UNENCRYPTED on this device, "
                              "readable by whoever takes its card",
                              "set it to central's X25519 public key (recorder central key prints it)"))
    if not config.device.central_signing_key:
        found.append(Weakness("device.central_signing_key", "receipts are trusted WITHOUT central's signature, so "
                              "anyone who can publish on the broker could mark evidence as delivered (and the "
                              "spool is never pruned)",
                              "set it to central's signing key (recorder central key --signing-out FILE prints it)"))
    if config.hal.backend == "auto" and on_raspberry_pi:
        found.append(Weakness("hal.backend", '"auto" on a Raspberry Pi: if the camera library goes missing the '
                              "service falls back to the simulator and records nothing real",
                              'set hal.backend = "pi"'))
    return found


def refusal(config: Config, backend: str, on_raspberry_pi: bool) -> str | None:
    """Why the service must not start on `backend` (the one resolved from `hal.backend`); None if it may."""
    if backend != "pi" or config.device.lab_setup:
        return None
    found = weaknesses(config, on_raspberry_pi)
    if not found:
        return None
    return ("refusing to record in a real room with an unsafe configuration: " + "; ".join(map(str, found))
            + " (a lab box may say device.lab_setup = true)")
