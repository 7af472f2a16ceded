"""`recorder central web`: the web application under gunicorn (a threaded worker that the master restarts if
it dies), over HTTPS when `web.tls_cert_file` and `web.tls_key_file` are given. Django is set up and the
database migrated in the master, before the worker is forked."""

from __future__ import annotations

import dataclasses
import getpass
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from central.config import CentralConfig
from central.errors import CentralError

log = logging.getLogger(__name__)


def settings_record(cfg: CentralConfig) -> dict[str, Any]:
    """The `[web]` settings as the audit records them at each start (the database's password left out)."""
    web = dataclasses.asdict(cfg.web)
    web["database"] = "sqlite" if not cfg.web.database else cfg.web.database.split("@")[-1]
    return {"web": web, "timezone": cfg.central.timezone}


def prepare(cfg: CentralConfig, store_root: Path) -> Callable[..., Any]:
    """Django set up for this store, its database migrated and the services checked; the WSGI application."""
    from django.core.wsgi import get_wsgi_application
    from django.db import DatabaseError, connections

    from central.store import FileStore
    from central.web.services import services
    from central.web.settings import configure_django, migrate

    FileStore(store_root)  # the store's folders first (a fresh central): the database and secret live there
    if store_root.stat().st_mode & 0o007:
        # A store made before central kept it private (or copied without its modes): say how to close it.
        log.warning("%s: other local users can enter the store (recordings, names, the audit); run "
                    "`chmod 750 %s` (and `chmod -R o-rwx %s`)", store_root, store_root, store_root)
    configure_django(cfg, store_root)
    try:
        migrate()
    except DatabaseError as err:
        raise CentralError(f"web.database: cannot prepare the web application's database: {err}") from err
    services()  # fail here, not at the first request, on a missing signing key or an unreadable store
    application = get_wsgi_application()
    connections.close_all()  # none may cross the fork into the worker
    return application


def serve(cfg: CentralConfig, store_root: Path, host: str | None = None, port: int | None = None) -> None:
    from gunicorn.app.base import BaseApplication

    application = prepare(cfg, store_root)
    from central.web.services import services

    # The settings the staff's access is governed by, at each start: a change of them is in the audit.
    services().audit.append(f"cli:{getpass.getuser()}", "", "settings", "web", settings_record(cfg))
    web = cfg.web
    options: dict[str, Any] = {
        "bind": f"{host or web.listen}:{port or web.port}", "workers": 1, "worker_class": "gthread",
        "threads": web.threads, "timeout": 120, "graceful_timeout": 10, "accesslog": None,
        "errorlog": "-", "loglevel": "warning", "preload_app": True, "proc_name": "recorder-central-web",
    }
    if web.tls_cert_file:
        options.update(certfile=web.tls_cert_file, keyfile=web.tls_key_file)

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Callable[..., Any]:
            return application

    scheme = "https" if web.tls_cert_file else "http"
    log.info("web application at %s://%s", scheme, options["bind"])
    Gunicorn().run()
