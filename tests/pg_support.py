"""A throw-away PostgreSQL cluster for the tests and benchmarks: `initdb` + `pg_ctl` in a temporary
folder, on a free loopback port, as an unprivileged user when we run as root (PostgreSQL refuses
to run as root). Debian's binaries are found by glob (/usr/lib/postgresql/*/bin), not by version."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PgUnavailable(Exception):
    """The cluster cannot be started here (no binaries, no unprivileged user, initdb failed)."""


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One cluster: `url(db)`, `create_db()`, `restart()`, `stop()`."""

    def __init__(self, base: Path | None = None):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise PgUnavailable("PostgreSQL binaries not found (/usr/lib/postgresql/*/bin): install Debian's "
                                "postgresql package (.ci/run does)")
        self.prefix: list[str] = []
        self.user = None
        if os.geteuid() == 0:
            self.user = "nobody"
            try:
                pwd.getpwnam(self.user)
            except KeyError as exc:
                raise PgUnavailable("running as root and no unprivileged user 'nobody' to run PostgreSQL") from exc
            runuser = shutil.which("runuser")
            if not runuser:
                raise PgUnavailable("running as root and `runuser` is missing: cannot drop privileges")
            self.prefix = [runuser, "-u", self.user, "--"]
        self.base = Path(base or tempfile.mkdtemp(prefix="publisher-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        if self.user:
            os.chmod(self.base, 0o755)
            shutil.chown(self.base, self.user)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])
        self.port = 0
        self.start()

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        cmd = [*self.prefix, str(self.bindir / cmd[0]), *cmd[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.base)
        if check and done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgUnavailable(f"{' '.join(cmd[-3:])} failed: {done.stderr.strip()[-800:]} {log}")
        return done

    def start(self) -> None:
        for attempt in range(3):  # a port taken between choosing and binding: choose again
            port = self.port or _free_port()
            done = self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                              f"-p {port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                              f"-c full_page_writes=off -c max_connections=200", "start"],
                             check=attempt == 2)
            if done.returncode == 0:
                self.port = port
                return
            self.port = 0

    def stop(self, mode: str = "fast") -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def restart(self) -> None:
        self.stop("immediate")
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
