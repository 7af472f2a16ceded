"""Central's side built from the configuration: the store, the receiver, and central's key pair."""

from __future__ import annotations

from pathlib import Path

from firmware_py.config import Config
from mqtt.receiver import Receiver
from mqtt.store import FileStore
from provisioning.central_key import create_central_key, load_central_key


def build_receiver(cfg: Config, store: FileStore | None = None, host: str | None = None,
                   port: int | None = None) -> Receiver:
    receiver = Receiver(store or FileStore(cfg.receiver.store_dir), host or cfg.mqtt.host, port or cfg.mqtt.port,
                        cfg.mqtt.topic_prefix, cfg.receiver.client_id, cfg.mqtt.tls,
                        share_group=cfg.receiver.share_group or None)
    if cfg.receiver.private_key_file:
        receiver.central_key = load_central_key(Path(cfg.receiver.private_key_file))
    return receiver


def central_key_sections(key_file: Path) -> dict[str, dict[str, str]]:
    """Config sections that seal a device's segments to a central key pair kept at `key_file`."""
    public = create_central_key(key_file)
    return {"device": {"central_public_key": public}, "receiver": {"private_key_file": str(key_file)}}
