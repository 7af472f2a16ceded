"""Central's side built from its configuration: the store and the receiver, with central's key."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.config import CentralConfig
from central.receiver import Receiver
from central.store import CentralStore, FileStore
from provisioning.central_key import load_central_key, load_signing_key


def build_receiver(cfg: CentralConfig, store: CentralStore | None = None, host: str | None = None,
                   port: int | None = None) -> Receiver:
    receiver = Receiver(store or FileStore(cfg.receiver.store_dir), host or cfg.mqtt.host, port or cfg.mqtt.port,
                        cfg.mqtt.topic_prefix, cfg.receiver.client_id, cfg.mqtt.tls,
                        share_group=cfg.receiver.share_group or None, keepalive=cfg.mqtt.keepalive,
                        retry_max_seconds=cfg.mqtt.retry_max_seconds, central_key=central_key(cfg))
    if cfg.receiver.signing_key_file:
        receiver.sign = load_signing_key(Path(cfg.receiver.signing_key_file)).sign
    return receiver


def central_key(cfg: CentralConfig) -> X25519PrivateKey | None:
    """Central's private key, if configured: it opens sealed segments and sealed personal fields."""
    return load_central_key(Path(cfg.receiver.private_key_file)) if cfg.receiver.private_key_file else None
