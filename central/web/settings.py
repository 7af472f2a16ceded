"""Django's settings, made from central's configuration tree (central/config.py `[web]`), never from the
environment: `configure_django` is called once by the server, the commands and the tests."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

from central.config import CentralConfig
from central.errors import CentralError
from evidence.durable import atomic_write

WEB_DB = "web.sqlite3"
SECRET_FILE = "web-secret.key"


def database(cfg: CentralConfig, store_root: Path) -> dict[str, Any]:
    """Django's DATABASES['default']: SQLite beside the store, or the PostgreSQL of `web.database`."""
    url = cfg.web.database
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(store_root / WEB_DB),
                "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE",
                            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"}}
    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or not parts.hostname:
        raise CentralError(f"web.database: {url.split('@')[-1]!r} must name a host and a database "
                           "(postgresql://USER:PASSWORD@HOST:PORT/NAME)")
    return {"ENGINE": "django.db.backends.postgresql", "NAME": urllib.parse.unquote(name),
            "USER": urllib.parse.unquote(parts.username or ""), "PASSWORD": urllib.parse.unquote(parts.password or ""),
            "HOST": parts.hostname, "PORT": str(parts.port or 5432), "CONN_MAX_AGE": 60}


def secret_key(store_root: Path) -> str:
    """Signs the staff's sessions and CSRF tokens: made once (0600) beside the store and kept."""
    path = store_root / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        atomic_write(path, secrets.token_urlsafe(48).encode(), mode=0o600)
        return path.read_text().strip()
    except OSError as err:
        raise CentralError(f"{path}: cannot read the web application's secret: {err.strerror or err}") from err


def configure_django(cfg: CentralConfig, store_root: Path, debug: bool = False) -> None:
    """Set Django up for central's store at `store_root` (once per process)."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    web = cfg.web
    here = Path(__file__).parent
    # Files Django makes (the SQLite database, its journal) are owner-only like everything in the store.
    os.umask(0o077)
    settings.configure(
        DEBUG=debug,
        SECRET_KEY=secret_key(store_root),
        ALLOWED_HOSTS=[*web.hosts, *([web.listen] if web.listen not in ("0.0.0.0", "::") else [])],
        ROOT_URLCONF="central.web.urls",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                        "django.contrib.messages", "django.contrib.staticfiles", "central.web.apps.WebConfig"],
        MIDDLEWARE=["django.middleware.security.SecurityMiddleware",
                    "django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.common.CommonMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware",
                    "django.contrib.messages.middleware.MessageMiddleware",
                    "django.middleware.clickjacking.XFrameOptionsMiddleware",
                    "central.web.access.LoginRequiredMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True,
                    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                       "django.contrib.auth.context_processors.auth",
                                                       "django.contrib.messages.context_processors.messages",
                                                       "central.web.context.banner"]}}],
        DATABASES={"default": database(cfg, store_root)},
        AUTH_PASSWORD_VALIDATORS=[
            {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
            {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
            {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"}],
        LANGUAGE_CODE="zh-hans",
        TIME_ZONE=cfg.central.timezone,
        USE_I18N=True,
        USE_TZ=True,
        STATIC_URL="/static/",
        STATICFILES_DIRS=[],
        LOGIN_URL="/login/",
        LOGIN_REDIRECT_URL="/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=bool(web.tls_cert_file),
        CSRF_COOKIE_SECURE=bool(web.tls_cert_file),
        SESSION_COOKIE_AGE=8 * 3600,
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
        X_FRAME_OPTIONS="DENY",
        SECURE_HSTS_SECONDS=31536000 if web.tls_cert_file else 0,
        SECURE_CONTENT_TYPE_NOSNIFF=True,
        SECURE_REFERRER_POLICY="same-origin",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING_CONFIG=None,
        RECORDER={"config": cfg, "store_root": store_root, "static": here / "static"},
    )
    django.setup()


def migrate(verbosity: int = 0) -> None:
    """Bring the database's tables up to this version (Django's migrations)."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=verbosity)
