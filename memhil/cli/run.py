"""``memhil run FILE``: run a protocol or experiment file into the run store, then say
what was stored and what to look at next. Torch, QCoDeS and the instruments load only once the command
line is accepted and the first line (what runs where) is printed."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import click

from memhil.cli.common import DEFAULT_DB, EXIT_UNSAFE, db_option

_DESCRIPTION = (
    "Run FILE into the run store: a protocol file (protocol:, params:, backend:) or an "
    "experiment file (algorithm:, dataset:, model:, train:, deploy:, backend:).\n\n"
    "Exit status: 0 completed; 1 failed during the run, every instrument's safe state "
    "confirmed by a query; 2 error before any instrument command; "
    f"{EXIT_UNSAFE} the safe state of an instrument could NOT be confirmed (it is named, "
    "with the state that is unknown); 130 Ctrl-C. The full trace of a failure goes to "
    "<db stem>.log beside the database."
)


@click.command("run", help=_DESCRIPTION)
@click.argument("protocol", metavar="FILE")
@click.option("--station", metavar="STATION.yaml", default=None, help="a real bench")
@click.option(
    "--mock-lab", "mock_lab", metavar="STATION.yaml", default=None, help="an in-process mock lab"
)
@click.option("--sim", is_flag=True, help="the simulator (defaults)")
@db_option("SQLite run store, created when missing")
@click.option(
    "--resume",
    is_flag=False,
    flag_value="last",
    default=None,
    metavar="[RUN_ID]",
    help="continue the last unfinished run of this file (or RUN_ID)",
)
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--quiet", is_flag=True, help="no progress bars and no first line: the summary only")
@click.option(
    "--visa-library",
    metavar="PATH",
    default=None,
    help="VISA library of a --station bench: '@py', '@sim' or a library path "
    "(loads native code, so never taken from a station file)",
)
def command(
    protocol: str,
    station: str | None,
    mock_lab: str | None,
    sim: bool,
    db: str | None,
    resume: str | None,
    no_progress: bool,
    quiet: bool,
    visa_library: str | None,
) -> int:
    from memhil.cli.common import CliError

    if sum(bool(x) for x in (station, mock_lab, sim)) > 1:
        raise CliError("memhil run: error: give at most one of --station, --mock-lab, --sim")
    if resume not in (None, "last") and not str(resume).isdigit():
        raise CliError(f"memhil run: error: --resume takes a run id (an integer), got {resume!r}")
    args = _Args(
        protocol=protocol,
        station=station,
        mock_lab=mock_lab,
        sim=sim,
        db=db or DEFAULT_DB,
        no_progress=no_progress or quiet,
        quiet=quiet,
        visa_library=visa_library,
        resume=False if resume is None else True if resume == "last" else int(resume),
    )
    backend = (
        "sim"
        if sim
        else {"station": station}
        if station
        else {"mock_lab": mock_lab}
        if mock_lab
        else None
    )
    return _run(args, backend)


class _Args:
    protocol: str
    station: str | None
    mock_lab: str | None
    sim: bool
    db: str
    no_progress: bool
    quiet: bool
    visa_library: str | None
    resume: bool | int

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def _header(args: _Args) -> str | None:
    """The first line: which protocol runs where, into which store (from a plain YAML
    read; the full validation follows). None when the file does not even parse."""
    from memhil.core.config import load_yaml

    data = load_yaml(args.protocol)  # a ConfigError here is the one-line exit 2
    name = data.get("protocol", data.get("algorithm", "?")) if isinstance(data, dict) else "?"
    cfg = data.get("backend") if isinstance(data, dict) else None
    where = (
        "the simulator"
        if args.sim
        else f"the bench of {args.station}"
        if args.station
        else f"a mock lab of {args.mock_lab}"
        if args.mock_lab
        else _where(cfg)
    )
    return f"memhil run: {name} from {args.protocol} on {where}, into {args.db}"


def _where(cfg) -> str:
    if cfg == "sim" or (isinstance(cfg, dict) and "sim" in cfg):
        return "the simulator"
    if isinstance(cfg, dict) and "mock_lab" in cfg:
        return f"a mock lab of {cfg['mock_lab']}"
    if isinstance(cfg, dict) and "station" in cfg:
        return f"the bench of {cfg['station']}"
    return "the file's backend"


def _summary(args: _Args, run_id: int, elapsed_s: float) -> str:
    """Points stored, duration, flags (open-circuit cells, re-applied units), and the next
    command to try."""
    from memhil.store import RunStore

    flags = []
    with RunStore(args.db) as store:
        df = store.load(run_id)
        md = store.metadata(run_id)
        chain = store.chain(run_id)
    if "open_circuit" in df:
        oc = df[df["open_circuit"] > 0.5]
        cells = [c for c in ("tile", "row", "col") if c in oc]
        n = len(oc[cells].drop_duplicates()) if cells else len(oc)
        if n:
            flags.append(f"{n} cell(s) read an open circuit (stored with open_circuit = 1)")
    again = md.get("memhil_reapplied_units") or []
    if again:
        flags.append(f"{len(again)} unit(s) applied more than once (see runs show --json)")
    runs = f"run {run_id}" if len(chain) == 1 else f"run {chain[0]} (continued in {chain[-1]})"
    lines = [f"{runs} completed: {len(df)} points stored in {args.db} in {elapsed_s:.1f} s"]
    if md.get("memhil_kind") == "experiment":
        from memhil.runs.experiment_run import training_summary

        lines += training_summary(df, md)
    lines += [f"  flag: {f}" for f in flags]
    lines.append(f"next: memhil runs show {chain[0]} --db {args.db}")
    return "\n".join(lines)


def _run(args: _Args, backend) -> int:
    """``memhil run``: exit 0 when the run completed; on Ctrl-C (130) or a failure during
    the run (1) say which run holds the completed points and how to resume it, and the
    safe state of every instrument as its confirming query reported it; when one could not
    be confirmed, name it and exit ``EXIT_UNSAFE`` (3). Errors found before any instrument
    command (bad file, limits, resume mismatch) exit 2. Log records and the full trace of
    a failure go to ``<db stem>.log`` beside the database, not to the console."""
    from memhil.core.errors import ConfigError, LimitError

    t0 = time.perf_counter()
    try:
        header = _header(args)
    except (ConfigError, LimitError) as exc:
        print(f"memhil run: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(header, flush=True)
    from memhil.core.config import load_yaml
    from memhil.instruments.guard import SafeStateError
    from memhil.protocols import ProtocolError
    from memhil.runs.experiment_file import is_experiment_file
    from memhil.runs.experiment_run import run_experiment_file
    from memhil.runs.protocol_run import run_protocol_file

    run_file = (
        run_experiment_file if is_experiment_file(load_yaml(args.protocol)) else run_protocol_file
    )

    log_path = Path(args.db).with_suffix(".log")
    with _log_to(log_path):
        try:
            run_id = run_file(
                args.protocol,
                backend=backend,
                db=args.db,
                resume=args.resume,
                progress=not args.no_progress,
                visa_library=args.visa_library,
            )
        except (ConfigError, LimitError, ProtocolError) as exc:
            if getattr(exc, "memhil_run_id", None) is None:
                print(f"memhil run: error: {exc}", file=sys.stderr)
                return 2
            return _stopped(args, exc, "failed", log_path)
        except KeyboardInterrupt as exc:
            if getattr(exc, "memhil_run_id", None) is None:
                print(
                    "memhil run: interrupted before the run started; nothing was stored",
                    file=sys.stderr,
                )
                return 130
            return _stopped(args, exc, "interrupted", log_path)
        except SafeStateError as exc:  # the run completed, the final safe state did not
            if getattr(exc, "memhil_run_id", None) is not None:
                return _stopped(args, exc, "failed", log_path)
            _log_trace(exc)
            print(
                f"memhil run: the run's data is stored in {args.db}, but the safe state "
                f"was not confirmed:\n  "
                + "\n  ".join(exc.report.lines())
                + f"\n(full trace in {log_path})",
                file=sys.stderr,
            )
            return EXIT_UNSAFE
        except Exception as exc:  # an instrument or device failure mid-run
            if getattr(exc, "memhil_run_id", None) is None:
                raise
            return _stopped(args, exc, "failed", log_path)
    print(_summary(args, run_id, time.perf_counter() - t0))
    return 0


def _stopped(args: _Args, exc: BaseException, how: str, log_path: Path) -> int:
    run_id = exc.memhil_run_id  # type: ignore[attr-defined]  # set by run_protocol_file
    where = (
        ["--sim"]
        if args.sim
        else ["--station", args.station]
        if args.station
        else ["--mock-lab", args.mock_lab]
        if args.mock_lab
        else []
    )
    cmd = " ".join(
        ["memhil", "run", args.protocol, *where, "--db", str(args.db), "--resume", str(run_id)]
    )
    _log_trace(exc)
    why = (str(exc) or "Ctrl-C") if isinstance(exc, KeyboardInterrupt) else _first_cause(exc)
    safe, unsafe = _safe_state_lines(exc)
    print(
        f"memhil run: {how}: {why}\n{safe}\nRun {run_id} in {args.db} holds every "
        f"completed point; resume it with:\n  {cmd}\n(full trace in {log_path})",
        file=sys.stderr,
    )
    if unsafe:
        return EXIT_UNSAFE
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _first_cause(exc: BaseException) -> str:
    """The operation that failed first, in one line: a ``HardwareError``'s own cause
    (not the safe state that followed), else the innermost exception."""
    from memhil.backends.hardware import HardwareError

    chain = _chain(exc)
    for e in reversed(chain):
        if isinstance(e, HardwareError):
            return e.summary
    first = chain[-1]
    return f"{type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''}"


def _safe_state_lines(exc: BaseException) -> tuple[str, bool]:
    """The final safe state for the console, and whether any instrument is unconfirmed:
    the backend's last report (taken when it closed), else one carried by the error."""
    from memhil.backends.hardware import HardwareBackend
    from memhil.instruments.guard import SafeStateError, SafeStateReport

    backend = getattr(exc, "memhil_backend", None)
    if backend is not None and not isinstance(backend, HardwareBackend):
        return "(simulator: no instrument)", False
    report = getattr(backend, "last_safe_state", None)
    if report is None:
        for e in _chain(exc):
            report = e.report if isinstance(e, SafeStateError) else getattr(e, "safe_state", None)
            if report is not None:
                break
    if not isinstance(report, SafeStateReport):
        return "Safe state NOT CONFIRMED: no confirming query answered", True
    head = (
        "Safe state confirmed by the instruments:"
        if report.confirmed
        else "Safe state NOT CONFIRMED for "
        + ", ".join(e.component for e in report.unconfirmed)
        + " (check the bench before touching it):"
    )
    return "\n".join([head, *("  " + line for line in report.lines())]), not report.confirmed


class _ConsoleLine(logging.Formatter):
    """One line per warning on the console (``memhil: warning: ...``); traces stay in the
    log file."""

    def format(self, record: logging.LogRecord) -> str:
        return f"memhil: {record.levelname.lower()}: {record.getMessage()}"


#: Loggers whose warnings are findings about the data (an open-circuit unit, a re-applied
#: unit) and reach the console; instrument chatter during recovery stays in the log file.
_CONSOLE_LOGGERS = ("memhil.protocols", "memhil.runs.protocol_run", "memhil.runs.experiment_run")


def _console_worthy(record: logging.LogRecord) -> bool:
    return record.exc_info is None and record.name.startswith(_CONSOLE_LOGGERS)


@contextlib.contextmanager
def _log_to(path: Path):
    """Send every log record to ``path`` for the duration of a run; the console gets the
    command's own summary and each finding about the data as one line, never a trace."""
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)  # no file until a record
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(_ConsoleLine())
    console.addFilter(_console_worthy)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.addHandler(console)
    root.setLevel(min(saved, logging.INFO) if saved else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.removeHandler(console)
        root.setLevel(saved)
        handler.close()


def _log_trace(exc: BaseException) -> None:
    logging.getLogger("memhil.cli.run").error("memhil run stopped", exc_info=exc)
