"""What the central tests share: a copy of the shared recorded session in a store of its own, with central's
configuration (signing key, private key) as `recorder central` commands read it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central import config as config_mod
from central.build import build_retention, central_key
from central.index import Query, SessionIndex
from central.retention import Retention, kept_since
from central.store import FileStore
from evidence import layout
from evidence.entry import Opening, parse_entry, unsealed
from provisioning.central_key import create_signing_key
from tests.central.test_sweep import copied_store
from tests.conftest import RecordedSession

ZONE = dt.timezone(dt.timedelta(hours=8))


@dataclasses.dataclass
class Kept:
    store: FileStore
    device: str
    session: str
    retention: Retention
    config_file: Path

    def of(self) -> str:
        return self.retention.of(self.device, self.session).cls

    def age(self, days: float) -> None:
        """Make the session as old as `days`: central's storage times are its entry files' times."""
        when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
        for path in (self.store.session_dir(self.device, self.session) / layout.ENTRIES).iterdir():
            os.utime(path, (when, when))
        self.index().rebuild()

    def central_key(self) -> X25519PrivateKey | None:
        return central_key(config_mod.load(self.config_file))

    def index(self) -> SessionIndex:
        return SessionIndex(self.store, self.central_key())

    def opening(self) -> Opening:
        """The session's `open` entry with its personal fields unsealed."""
        opening = parse_entry(self.store.session_files(self.device, self.session).read_entry(0)).opening
        key = self.central_key()
        assert opening is not None and key is not None
        return unsealed(opening, key) if opening.sealed else opening

    def kept_since(self) -> dt.datetime:
        [row] = self.index().sessions(Query(session=self.session))
        return kept_since(row).astimezone(ZONE)


@pytest.fixture
def kept(recorded_long_ago: RecordedSession, tmp_path: Path) -> Kept:
    recorded = recorded_long_ago
    store, device, _ = copied_store(recorded, tmp_path / "central")
    signing = tmp_path / "signing.key"
    create_signing_key(signing)
    config_file = tmp_path / "central.toml"
    config_file.write_text(f'[central]\ntimezone = "Asia/Shanghai"\n[receiver]\nstore_dir = "{store.root}"\n'
                           f'signing_key_file = "{signing}"\n'
                           f'private_key_file = "{recorded.rig.central.receiver.private_key_file}"\n')
    cfg = config_mod.load(config_file)
    return Kept(store, device, recorded.session, build_retention(cfg, store), config_file)


