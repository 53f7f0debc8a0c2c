"""The runs index: RUNS_ROOT/index.sqlite, the one module that reads and writes it.

The runs root is the parent of a run directory: `cnnlab train --out somewhere/x` records into
somewhere/index.sqlite, the default runs/<time>-<model>-<data> into runs/index.sqlite. Schema version 1
(table cnnlab_meta holds it) has two tables of its own, prefixed so that an Optuna study can live in the
same file (Optuna's RDB storage creates its own `studies`, `trials`, ... tables beside them):

    cnnlab_runs          one row per run directory: run_id (the directory's name, made unique with -2, -3…),
                         path, status (queued, running, finished, failed, pruned) and detail, model, data,
                         seed, config (the TrainConfig fields as JSON), params, flops (per image, forward),
                         epochs done / planned, the last epoch's train and validation numbers, the best
                         validation accuracy, the kept weights' validation and test scores, train and wall
                         seconds, start/update/finish times (UTC), host and pid of the writer, and the
                         experiment / sweep study and trial it belongs to
    cnnlab_experiments   one row per `cnnlab experiment run`: id, name, directory, status, options

Several processes write at once (parallel experiment jobs, sweep workers): the file is in WAL mode, every
write is one short `BEGIN IMMEDIATE` transaction and waits up to `BUSY_TIMEOUT_S` for the lock. A run whose
writer died (SIGKILL, power loss) stays `running` until a reader notices its RUN/.lock is no longer held
(`refresh_stale`, run by every leaderboard read); it is then marked failed, never finished — unless its
result.json exists, which only a finished run writes."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
STATUSES = ("queued", "running", "finished", "failed", "pruned")

# (name, SQL type): the cnnlab_runs columns, in the order a row is shown.
RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT PRIMARY KEY"), ("status", "TEXT NOT NULL"), ("detail", "TEXT"),
    ("model", "TEXT"), ("data", "TEXT"), ("seed", "INTEGER"), ("params", "INTEGER"), ("flops", "INTEGER"),
    ("epochs", "INTEGER"), ("epochs_planned", "INTEGER"),
    ("train_loss", "REAL"), ("train_accuracy", "REAL"), ("val_loss", "REAL"), ("val_accuracy", "REAL"),
    ("best_val_accuracy", "REAL"), ("test_loss", "REAL"), ("test_accuracy", "REAL"), ("test_top5", "REAL"),
    ("train_seconds", "REAL"), ("wall_seconds", "REAL"),
    ("experiment", "TEXT"), ("study", "TEXT"), ("trial", "INTEGER"),
    ("started_at", "TEXT"), ("updated_at", "TEXT"), ("finished_at", "TEXT"),
    ("host", "TEXT"), ("pid", "INTEGER"), ("source", "TEXT"), ("path", "TEXT NOT NULL UNIQUE"),
    ("config", "TEXT"),
)
RUN_FIELDS = tuple(name for name, _ in RUN_COLUMNS)
NUMERIC_FIELDS = tuple(name for name, kind in RUN_COLUMNS if kind.startswith(("INTEGER", "REAL")))
EXPERIMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiment_id", "TEXT PRIMARY KEY"), ("name", "TEXT NOT NULL"), ("status", "TEXT NOT NULL"),
    ("detail", "TEXT"), ("runs", "INTEGER"), ("options", "TEXT"), ("started_at", "TEXT"), ("finished_at", "TEXT"),
    ("host", "TEXT"), ("pid", "INTEGER"), ("path", "TEXT NOT NULL"),
)
EXPERIMENT_FIELDS = tuple(name for name, _ in EXPERIMENT_COLUMNS)
FILTER_OPS = ("=", "!=", ">", ">=", "<", "<=", "~")


def now() -> str:
    """The index's timestamps: ISO 8601, UTC, whole seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def host_name() -> str:
    return socket.gethostname()


def index_path(root: str | Path) -> Path:
    return Path(root) / INDEX_NAME


def root_of(run_dir: str | Path) -> Path:
    """The runs root a run directory records into: its parent."""
    return Path(run_dir).resolve().parent


def lock_is_free(run_dir: str | Path) -> bool:
    """True when no process holds RUN/.lock (cnnlab.runs.run_lock's flock): nobody is writing that run.
    The probe takes the lock for an instant and lets it go."""
    import fcntl

    path = Path(run_dir) / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever held it, or the directory is gone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock
    return True


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunIndex:
    """RUNS_ROOT/index.sqlite opened for reading and writing (created on first use, `create=True`)."""

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        self.path = index_path(self.root)
        if not create and not self.path.is_file():
            raise ConfigError(f"{self.path}: no runs index here (train a run with --out {self.root}/NAME, or "
                              f"`cnnlab runs import {self.root}`)")
        if create:
            if self.root.exists() and not self.root.is_dir():
                raise ConfigError(f"{self.root}: the runs root is a file, not a directory")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"{self.root}: cannot create the runs root ({exc.strerror or exc})") from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not create and self._schema_version() is None:
                # Reading commands never initialise a file: an empty (truncated) one or another program's
                # database is refused as it is, not given cnnlab's tables.
                self.close()
                what = "an empty file" if self.path.stat().st_size == 0 else "a database without cnnlab's tables"
                raise ConfigError(f"{self.path}: not a runs index ({what}); `cnnlab runs import {self.root}` "
                                  f"rebuilds an index from the run directories (move this file aside first)")
            self._setup()
        except sqlite3.DatabaseError as exc:
            self.close()
            why = first_line(exc) or type(exc).__name__
            raise ConfigError(f"{self.path}: not a usable runs index ({why})") from None

    @classmethod
    def for_run(cls, run_dir: str | Path) -> "RunIndex":
        return cls(root_of(run_dir))

    def __enter__(self) -> "RunIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()
            self.conn = None

    # --- schema ----------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        conn = self.conn
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: every later connection (Optuna's too) uses it
        conn.execute("PRAGMA synchronous = NORMAL")
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise ConfigError(f"{self.path}: runs index schema_version {version} is newer than this cnnlab "
                              f"understands ({SCHEMA_VERSION}); upgrade cnnlab")
        if version == SCHEMA_VERSION:
            return
        runs = ", ".join(f"{name} {kind}" for name, kind in RUN_COLUMNS)
        experiments = ", ".join(f"{name} {kind}" for name, kind in EXPERIMENT_COLUMNS)
        with self._write():
            conn.execute("CREATE TABLE IF NOT EXISTS cnnlab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS cnnlab_runs ({runs})")
            conn.execute(f"CREATE TABLE IF NOT EXISTS cnnlab_experiments ({experiments})")
            conn.execute("CREATE INDEX IF NOT EXISTS cnnlab_runs_status ON cnnlab_runs (status)")
            conn.execute("INSERT OR REPLACE INTO cnnlab_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _schema_version(self) -> int | None:
        has = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cnnlab_meta'").fetchone()
        if not has:
            return None
        row = self.conn.execute("SELECT value FROM cnnlab_meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else None
        except ValueError:
            raise ConfigError(f"{self.path}: cnnlab_meta.schema_version {row[0]!r} is not a number") from None

    def _write(self):
        """A short write transaction (BEGIN IMMEDIATE takes the write lock up front, so two writers queue on
        the busy timeout instead of failing half-way)."""
        return _Transaction(self.conn)

    # --- runs: writing -----------------------------------------------------------------------------------
    def upsert_run(self, run_dir: str | Path, values: dict[str, Any], *, keep: Iterable[str] = ()) -> str:
        """Insert or update the row of `run_dir` with `values` (column → value); columns in `keep` keep a
        value they already have. Returns the run id."""
        path = str(Path(run_dir).resolve())
        unknown = set(values) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"unknown runs-index columns: {sorted(unknown)}")
        values = {k: _sql_value(v) for k, v in values.items() if k not in ("run_id", "path")}
        values["updated_at"] = now()
        with self._write():
            row = self.conn.execute("SELECT run_id FROM cnnlab_runs WHERE path = ?", (path,)).fetchone()
            if row is None:
                run_id = self._free_id(Path(path).name)
                values.setdefault("status", "queued")
                cols = ["run_id", "path", *values]
                self.conn.execute(f"INSERT INTO cnnlab_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                  (run_id, path, *values.values()))
                return run_id
            run_id = row[0]
            sets = [f"{k} = COALESCE({k}, ?)" if k in keep else f"{k} = ?" for k in values]
            self.conn.execute(f"UPDATE cnnlab_runs SET {', '.join(sets)} WHERE run_id = ?", (*values.values(), run_id))
            return run_id

    def _free_id(self, name: str) -> str:
        candidate, k = name, 1
        while self.conn.execute("SELECT 1 FROM cnnlab_runs WHERE run_id = ?", (candidate,)).fetchone():
            k += 1
            candidate = f"{name}-{k}"
        return candidate

    def run_id_of(self, run_dir: str | Path) -> str | None:
        """The id of the row recording `run_dir`, None if it has none."""
        row = self.conn.execute("SELECT run_id FROM cnnlab_runs WHERE path = ?", (str(Path(run_dir).resolve()),))
        found = row.fetchone()
        return found[0] if found else None

    def set_status(self, run_id: str, status: str, detail: str | None = None, *,
                   only_if: tuple[str, ...] | None = None) -> bool:
        """Change a run's status (only from one of `only_if`, when given); True if the row changed."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        cond, args = "", ()
        if only_if:
            cond, args = f" AND status IN ({', '.join('?' * len(only_if))})", tuple(only_if)
        with self._write():
            cur = self.conn.execute(f"UPDATE cnnlab_runs SET status = ?, detail = ?, updated_at = ? "
                                    f"WHERE run_id = ?{cond}", (status, detail, now(), run_id, *args))
        return cur.rowcount > 0

    def refresh_stale(self) -> list[str]:
        """Mark the runs whose writer is gone: `running` rows of this host whose RUN/.lock is free (finished
        if result.json exists, else failed), `queued` rows whose queuing process is dead. Returns their ids."""
        host = host_name()
        changed = []
        rows = self.conn.execute("SELECT run_id, path, status, pid FROM cnnlab_runs WHERE status IN "
                                 "('running', 'queued') AND host = ?", (host,)).fetchall()
        for row in rows:
            run_dir = Path(row["path"])
            if row["status"] == "running" and lock_is_free(run_dir):
                if (run_dir / "result.json").is_file():
                    from .record import values_from_run  # the result is on disk: take the numbers from it

                    try:
                        values = values_from_run(run_dir)
                    except ConfigError:
                        values = None
                    if values is not None and values["status"] == "finished":
                        self.upsert_run(run_dir, values)
                        changed.append(row["run_id"])
                        continue
                if self.set_status(row["run_id"], "failed", "killed or crashed: its lock was released without a "
                                   "result (resumable with cnnlab train --resume)", only_if=("running",)):
                    changed.append(row["run_id"])
            elif row["status"] == "queued" and not pid_alive(row["pid"]):
                if self.set_status(row["run_id"], "failed", "never started: the process that queued it stopped",
                                   only_if=("queued",)):
                    changed.append(row["run_id"])
        return changed

    # --- runs: reading -----------------------------------------------------------------------------------
    def run(self, ref: str) -> dict:
        """The row of a run by id, unique id prefix or directory path; ConfigError naming `ref` otherwise."""
        if not ref.strip():  # an empty prefix would match every run (and show the first)
            raise ConfigError("run '': give a run id, a unique prefix of one, or a run directory")
        row = self.conn.execute("SELECT * FROM cnnlab_runs WHERE run_id = ?", (ref,)).fetchone()
        if row is None and ("/" in ref or Path(ref).exists()):
            row = self.conn.execute("SELECT * FROM cnnlab_runs WHERE path = ?", (str(Path(ref).resolve()),)).fetchone()
        if row is None:
            like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self.conn.execute("SELECT * FROM cnnlab_runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 6",
                                     (like,)).fetchall()
            if len(rows) > 1:
                names = ", ".join(r["run_id"] for r in rows[:5])
                raise ConfigError(f"run {ref!r} is ambiguous in {self.path}: {names}{', …' if len(rows) > 5 else ''}")
            row = rows[0] if rows else None
        if row is None:
            raise ConfigError(f"run {ref!r}: not in {self.path} (see `cnnlab runs --root {self.root}`)")
        return row_dict(row)

    def runs(self, filters: Iterable[tuple[str, str, Any]] = (), sort: str | None = None, descending: bool = True,
             limit: int | None = None) -> list[dict]:
        """Rows matching every (column, op, value) filter — column a RUN_FIELDS name or `config.FIELD` — sorted
        by `sort` (NULLs last), at most `limit`."""
        where, args = [], []
        for column, op, value in filters:
            expr = _column_expr(column)
            if op not in FILTER_OPS:
                raise ConfigError(f"unknown filter operator {op!r}; known: {' '.join(FILTER_OPS)}")
            if op == "~":
                where.append(f"CAST({expr} AS TEXT) LIKE ?")
                args.append(f"%{value}%")
            elif value is None:
                where.append(f"{expr} IS {'NOT ' if op == '!=' else ''}NULL")
            else:
                where.append(f"{expr} {op} ?")
                args.append(value)
        sql = "SELECT * FROM cnnlab_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = _column_expr(sort) if sort else "started_at"
        sql += f" ORDER BY ({order}) IS NULL, {order} {'DESC' if descending else 'ASC'}, run_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [row_dict(r) for r in self.conn.execute(sql, args).fetchall()]

    # --- experiments ---------------------------------------------------------------------------------------
    def upsert_experiment(self, experiment_id: str, values: dict[str, Any]) -> None:
        values = {k: _sql_value(v) for k, v in values.items()}
        unknown = set(values) - set(EXPERIMENT_FIELDS)
        if unknown:
            raise ValueError(f"unknown experiment columns: {sorted(unknown)}")
        cols = ["experiment_id", *values]
        with self._write():
            self.conn.execute(f"INSERT INTO cnnlab_experiments ({', '.join(cols)}) VALUES "
                              f"({', '.join('?' * len(cols))}) ON CONFLICT(experiment_id) DO UPDATE SET "
                              + ", ".join(f"{k} = excluded.{k}" for k in values),
                              (experiment_id, *values.values()))

    def experiments(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM cnnlab_experiments ORDER BY started_at").fetchall()
        return [row_dict(r) for r in rows]


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _column_expr(column: str) -> str:
    """SQL for a column name or `config.FIELD` (checked against the known names: never user text in SQL)."""
    if column in RUN_FIELDS:
        return column
    if column.startswith("config."):
        from ..train.config import TrainConfig

        name = column.split(".", 1)[1].replace("-", "_")
        if name in TrainConfig.field_names():
            return f"json_extract(config, '$.{name}')"
        raise ConfigError(f"unknown config field {name!r} in {column!r}")
    raise ConfigError(f"unknown column {column!r}; known: {', '.join(RUN_FIELDS)} or config.FIELD")


def _sql_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value)
    return value


def row_dict(row: sqlite3.Row) -> dict:
    """A row as a dict, with `config`/`options` parsed back from JSON."""
    out = dict(row)
    for key in ("config", "options"):
        if isinstance(out.get(key), str):
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                pass
    return out


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only ('' for none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
