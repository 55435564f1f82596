"""A throwaway PostgreSQL cluster for the team-mode tests: Debian's ``postgresql`` package,
``initdb`` in a temp folder, the server on 127.0.0.1 on a free port, sockets in the folder.

The server refuses to run as root, so when this process is root the cluster belongs to the
``postgres`` system user (made by Debian's package) and its commands run as that user.
``fsync=off``: the cluster is thrown away after the run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

PASSWORD = "pg-PLANTEDpassw0rd-xyz"  # grepped for in errors, reprs and logs
USER = "holynb"
DATABASE = "holynb"
REQUIRE_ENV = ("CI", "HOLYNB_REQUIRE_POSTGRES")


class PostgresUnavailable(RuntimeError):
    """The cluster could not be started (the message says why)."""


def required() -> bool:
    """Whether the tests must not skip for want of PostgreSQL (CI)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in REQUIRE_ENV)


def _bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(initdb)
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
        "apt-get install postgresql"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster: ``url`` has the password; ``url_for(db)`` another database."""

    folder: str
    port: int
    bin_dir: str
    as_user: list[str]
    process: subprocess.Popen[bytes]

    def url_for(self, database: str = DATABASE, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for()

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [*self.as_user, f"{self.bin_dir}/psql", "-h", self.folder, "-p", str(self.port),
             "-U", "postgres", "-d", database, "-At", "-c", sql],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresUnavailable(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """A fresh database owned by the test user; its URL."""
        self.psql(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url_for(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            subprocess.run(
                [*self.as_user, f"{self.bin_dir}/pg_ctl", "-D", f"{self.folder}/data", "-m",
                 "immediate", "-w", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb, start, create the test user and database; raises ``PostgresUnavailable``."""
    bin_dir = _bin_dir()
    folder = tempfile.mkdtemp(prefix="holynb-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable(
                "running as root and there is no 'postgres' user to run the server as"
            ) from None
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = f"{folder}/data"
    done = subprocess.run(
        [*as_user, f"{bin_dir}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
         "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = _free_port()
    log = open(f"{folder}/server.log", "wb")  # noqa: SIM115 (the server's for its lifetime)
    if as_user:
        os.chown(log.name, *(os.stat(folder).st_uid, os.stat(folder).st_gid))
    process = subprocess.Popen(
        [*as_user, f"{bin_dir}/postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port),
         "-k", folder, "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200",
         "-c", "log_min_messages=warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cluster = Cluster(folder, port, bin_dir, as_user, process)
    deadline = time.monotonic() + 30
    while True:
        ready = subprocess.run(
            [f"{bin_dir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        )
        if ready.returncode == 0:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            with open(f"{folder}/server.log", errors="replace") as f:
                tail = f.read()[-500:]
            cluster.stop()
            raise PostgresUnavailable(f"the server did not start: {tail}")
        time.sleep(0.1)
    cluster.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    cluster.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
    return cluster


def server_log(cluster: Cluster) -> str:
    """What the server logged so far."""
    with open(f"{cluster.folder}/server.log", errors="replace") as f:
        return f.read()
