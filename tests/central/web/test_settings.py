"""The web application's configuration: the `[web]` section is as strict as every other (a bad value is an
error naming the field), and a PostgreSQL URL becomes Django's database settings (ACCESS)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from central import config as central_config
from central.errors import CentralError
from central.web.settings import database
from evidence.errors import ConfigError
from firmware_py import rig as rig_mod


@pytest.mark.parametrize(("web", "field"), [
    ({"port": 0}, "web.port"), ({"approval_hours": float("nan")}, "web.approval_hours"),
    ({"approval_hours": -1.0}, "web.approval_hours"), ({"login_attempts": 0}, "web.login_attempts"),
    ({"exempt_roles": ["superuser"]}, "web.exempt_roles"), ({"tls_cert_file": "/etc/cert.pem"}, "web.tls_cert_file"),
    ({"database": "mysql://x@y/z"}, "web.database"), ({"listen": " "}, "web.listen"), ({"colour": "red"}, "web.colour"),
])
def test_a_bad_web_setting_names_its_field__ACCESS(web: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        central_config.from_dict({"web": web})


def test_the_database_is_sqlite_beside_the_store_or_the_postgresql_named__ACCESS(tmp_path: Path) -> None:
    sqlite = database(central_config.CentralConfig(), tmp_path)
    assert sqlite["ENGINE"].endswith("sqlite3") and sqlite["NAME"] == str(tmp_path / "web.sqlite3")
    cfg = central_config.from_dict({"web": {"database": "postgresql://rec%40der:p%20w@db.local:6543/central"}})
    pg = database(cfg, tmp_path)
    assert (pg["ENGINE"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "django.db.backends.postgresql", "rec@der", "p w", "db.local", "6543", "central")
    with pytest.raises(CentralError, match="must name a host and a database"):
        database(central_config.from_dict({"web": {"database": "postgresql://user@host"}}), tmp_path)


def test_accounts_from_the_command_line_refuse_weak_passwords_and_unknown_setups_in_one_line__ACCESS(
        tmp_path: Path) -> None:
    _, central = rig_mod.configs(tmp_path, "127.0.0.1", 1)
    config = rig_mod.web_config_file(central, tmp_path / "central-web.toml")
    with pytest.raises(RuntimeError) as weak:
        rig_mod.web_user(config, "admin", "admin", "short")
    assert "too short" in str(weak.value) and "Traceback" not in str(weak.value)
    unsigned = rig_mod.web_config_file(dataclasses.replace(central, receiver=dataclasses.replace(
        central.receiver, signing_key_file="")), tmp_path / "unsigned.toml")
    with pytest.raises(RuntimeError) as no_key:
        rig_mod.web_user(unsigned, "admin", "admin", "a long enough passphrase")
    assert "signing_key_file is empty" in str(no_key.value) and "Traceback" not in str(no_key.value)


def test_the_web_application_serves_https_with_the_agency_cas_certificate__ACCESS(tmp_path: Path) -> None:
    from central.web.client import WebClient
    from provisioning.ca import CertificateAuthority

    ca, _ = CertificateAuthority.load_or_create(tmp_path / "ca")
    issued = ca.issue_web_server(["recorder-central.local"])
    _, central = rig_mod.configs(tmp_path, "127.0.0.1", 1)
    server = rig_mod.start_web(central, tmp_path / "web", {"tls_cert_file": str(issued.cert),
                                                           "tls_key_file": str(issued.key)},
                               admin=("admin", "a long enough passphrase"))
    try:
        assert server.url.startswith("https://")
        client = WebClient(server.url, ca_file=ca.ca_file)
        reply = client.login("admin", "a long enough passphrase")
        assert reply.status == 200 and reply.url.endswith("/")
        assert "Strict-Transport-Security" in client.get("/").headers
        with pytest.raises(OSError):  # an unknown CA: the browser or script refuses the server
            WebClient(server.url).get("/login/")
        with pytest.raises(OSError):  # plain HTTP to it: nothing is answered
            WebClient(server.url.replace("https", "http")).get("/login/")
    finally:
        server.close()
