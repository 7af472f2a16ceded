"""Central's side built from its configuration: the store and the receiver, with central's key."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.audit import AUDIT_FILE, AuditLog
from central.bookings import Bookings
from central.config import CentralConfig
from central.errors import CentralError
from central.index import SessionIndex
from central.receiver import Receiver
from central.register import Registers
from central.retention import Retention
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


def build_audit(cfg: CentralConfig, store: CentralStore) -> AuditLog:
    """The access audit, signed with central's signing key (required: an unsigned audit proves nothing)."""
    if not cfg.receiver.signing_key_file:
        raise CentralError("receiver.signing_key_file is empty: central signs its access audit and the sessions' "
                           "registers with its signing key; make one with `recorder central key --out K "
                           "--signing-out S`")
    identity = load_signing_key(Path(cfg.receiver.signing_key_file))
    return AuditLog(store.state_file(AUDIT_FILE), identity.sign, identity.public_key_b64, cfg.central.zone)


def build_bookings(cfg: CentralConfig, store: CentralStore, audit: AuditLog | None = None,
                   index: SessionIndex | None = None) -> Bookings:
    """Bookings signed with central's signing key (the devices check every set against it) and audited."""
    audit = audit or build_audit(cfg, store)
    identity = load_signing_key(Path(cfg.receiver.signing_key_file))
    return Bookings(store, identity.sign, audit, cfg.central.zone, index)


def build_retention(cfg: CentralConfig, store: CentralStore, audit: AuditLog | None = None) -> Retention:
    return Retention(store, Registers(store, audit or build_audit(cfg, store)), cfg.retention)
