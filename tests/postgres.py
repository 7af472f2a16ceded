"""A real PostgreSQL server the tests start themselves: a fresh cluster (initdb) in a temporary folder, on a
free loopback port, with password authentication, stopped at the end. Run as the `postgres` user when the
tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt.broker import free_port

USER, PASSWORD, DATABASE = "recorder", "pg pass 4 tests", "recorder"


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"PostgreSQL's {name} is not installed (make setup installs the postgresql package)")
    return path


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A running server; yields its URL (postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE)."""
    # Its own folder under /tmp: pytest's folders are root's alone, and the server's user must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="recorder-pg-"))
    data = workdir / "pgdata"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
        shutil.chown(data, "postgres")
    pwfile = workdir / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    port = free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PGPASSWORD": PASSWORD})
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]}: {done.stdout}{done.stderr}")

    run(_bin("initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile), "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
    run(_bin("pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w", "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=on", "start")
    try:
        run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE)
        yield f"postgresql://{USER}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{port}/{DATABASE}"
    finally:
        run(_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url) as connection:
        cursor = connection.execute(sql)
        return list(cursor.fetchall()) if cursor.description is not None else []
