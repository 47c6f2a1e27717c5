"""Real services for the scale-out tests, started once per test session: a local Ray cluster and a
PostgreSQL server on a free port in a temporary folder. Imported into conftest.py."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

__all__ = ["pg_url", "postgres_server", "ray_cluster"]  # what conftest.py's star import takes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A fresh local Ray instance (2 CPUs, no dashboard) shared by the session; yields its address,
    which `bench run --executor ray --address` in a subprocess can join."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'benchsuite[ray]')")
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                       object_store_memory=200 * 1024 ** 2)
    yield context.address_info["gcs_address"]
    ray.shutdown()


class PostgresServer:
    """initdb + pg_ctl in a temporary folder, as user postgres when we are root (the server refuses root)."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="bench-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres")

    def _pg(self, tool: str, *args: str, check: bool = True) -> None:
        done = subprocess.run([*self.as_postgres, os.path.join(self.bindir, tool), *args], capture_output=True,
                              text=True, timeout=120)
        if check and done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._pg("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        # fsync off: a throwaway server; the socket lives in our folder, not /var/run/postgresql.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        self._pg("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'benchsuite[postgres]')")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    bindir = os.path.dirname(found[-1]) if found else os.path.dirname(shutil.which("initdb") or "")
    if not bindir:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A new, empty database on the session's server: an SQLAlchemy URL."""
    return postgres_server.create_database()
