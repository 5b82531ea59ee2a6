"""The ``memhil`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path


#: ``memhil run`` exit status when an instrument's safe state could not be confirmed.
EXIT_UNSAFE = 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="memhil", description="memristive hardware-in-the-loop")
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="form, characterize and fit a virtual chip on the mock "
                                       "lab, then predict it with the simulator")
    demo.add_argument("--size", type=int, default=16, help="array rows and columns")
    demo.add_argument("--db", default="memhil-demo.db", help="SQLite run store")
    demo.add_argument("--out", default="memhil-demo", help="folder for plots and the fit")
    demo.add_argument("--seed", type=int, default=0)
    show = sub.add_parser("showcase", help="simulator only: program weights, read back, drift")
    show.add_argument("--rows", type=int, default=64, help="inputs (array rows)")
    show.add_argument("--outputs", type=int, default=32, help="outputs (2 columns each)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--torch-device", default="cpu", help="cpu or cuda")
    sub.add_parser("models", help="list the device models selectable by name")
    lab = sub.add_parser("mock-lab", help="the emulated bench")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    serve = lab_sub.add_parser("serve", help="serve every instrument of a station on loopback")
    serve.add_argument("station", help="station YAML (with a mock: section)")
    serve.add_argument("--write-station", default=None,
                       help="write the live station (actual addresses) to this YAML file")
    from memhil.cli import runs as cli_runs
    cli_runs.add_parser(sub)
    runp = sub.add_parser(
        "run", help="run a protocol file into the run store",
        description="Exit status: 0 completed; 1 failed during the run, every instrument's "
        "safe state confirmed by a query; 2 error before any instrument command; "
        f"{EXIT_UNSAFE} the safe state of an instrument could NOT be confirmed (it is named, "
        "with the state that is unknown); 130 Ctrl-C. The full trace of a failure goes to "
        "<db stem>.log beside the database.")
    runp.add_argument("protocol", help="protocol YAML (protocol:, params:, backend:, name:)")
    where = runp.add_mutually_exclusive_group()
    where.add_argument("--station", metavar="STATION.yaml", help="a real bench")
    where.add_argument("--mock-lab", metavar="STATION.yaml", help="an in-process mock lab")
    where.add_argument("--sim", action="store_true", help="the simulator (defaults)")
    runp.add_argument("--db", default=cli_runs.DEFAULT_DB, help="SQLite run store")
    runp.add_argument("--resume", nargs="?", const=True, default=False, type=int,
                      metavar="RUN_ID", help="continue the last unfinished run of this file "
                      "(or RUN_ID)")
    runp.add_argument("--no-progress", action="store_true")
    runp.add_argument("--visa-library", metavar="PATH", default=None,
                      help="VISA library of a --station bench: '@py', '@sim' or a library "
                      "path (loads native code, so never taken from a station file)")
    fitp = sub.add_parser("fit", help="fit a device model to stored pulse_train run(s)")
    fitp.add_argument("run_id", type=int, nargs="+",
                      help="pulse_train run(s); several (or several amplitudes) for vteam")
    fitp.add_argument("--model", choices=["neurosim", "vteam"], default="neurosim",
                      help="neurosim: LTP/LTD law, one run; vteam: threshold ODE, pulse "
                      "trains at several amplitudes")
    fitp.add_argument("--db", default=cli_runs.DEFAULT_DB, help="SQLite run store")
    fitp.add_argument("--out", default="fitted.yaml", help="versioned device YAML to write")
    fitp.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                      help="a held parameter (e.g. c2c_std=0.005; vteam: d_m, *_dtod, or a "
                      "fitted name to hold it)")
    args = ap.parse_args(argv)

    if args.command == "demo":
        from memhil.cli.demo import run_demo
        run_demo(rows=args.size, cols=args.size, db=args.db, out_dir=args.out, seed=args.seed)
    elif args.command == "showcase":
        from memhil.cli.showcase import run_showcase
        run_showcase(rows=args.rows, outputs=args.outputs, seed=args.seed,
                 torch_device=args.torch_device)
    elif args.command == "mock-lab":
        from memhil.core.errors import ConfigError
        from memhil.mock_hw.lab import serve as serve_lab
        try:
            serve_lab(args.station, ready_file=args.write_station)
        except ConfigError as exc:  # a bad station file, a port already in use
            print(f"memhil mock-lab serve: error: {exc}", file=sys.stderr)
            return 2
    elif args.command == "runs":
        from memhil.cli import runs as cli_runs
        return cli_runs.run(args)
    elif args.command == "run":
        backend = ("sim" if args.sim else {"station": args.station} if args.station
                   else {"mock_lab": args.mock_lab} if args.mock_lab else None)
        return _run(args, backend)
    elif args.command == "fit":
        from memhil.runs.fit import fit_run
        fixed = {}
        for item in args.fix:
            k, _, v = item.partition("=")
            fixed[k.strip()] = float(v)
        fit = fit_run(args.db, args.run_id, fixed=fixed or None, model=args.model)
        for name, value in fit.params.items():
            err = fit.stderr.get(name)
            print(f"{name:<10} {value:.6g}" + (f" +/- {err:.2g}" if err is not None else ""))
        print(f"residual rms {fit.residual_rms:.3g} S over {fit.n_points} points")
        print(f"{fit.to_yaml(args.out)} (version {fit.version})")
    elif args.command == "models":
        from memhil.backends.sim.devices import device_model_names
        print("\n".join(device_model_names()))
    return 0


def _run(args: argparse.Namespace, backend) -> int:
    """``memhil run``: exit 0 when the run completed; on Ctrl-C (130) or a failure during
    the run (1) say which run holds the completed points and how to resume it, and the
    safe state of every instrument as its confirming query reported it; when one could not
    be confirmed, name it and exit ``EXIT_UNSAFE`` (3). Errors found before any instrument
    command (bad file, limits, resume mismatch) exit 2. Log records and the full trace of
    a failure go to ``<db stem>.log`` beside the database, not to the console."""
    from memhil.core.errors import ConfigError, LimitError
    from memhil.runs.protocol_run import run_protocol_file
    from memhil.instruments.guard import SafeStateError
    from memhil.protocols import ProtocolError

    log_path = Path(args.db).with_suffix(".log")
    with _log_to(log_path):
        try:
            run_id = run_protocol_file(args.protocol, backend=backend, db=args.db,
                                       resume=args.resume, progress=not args.no_progress,
                                       visa_library=args.visa_library)
        except (ConfigError, LimitError, ProtocolError) as exc:
            if getattr(exc, "memhil_run_id", None) is None:
                print(f"memhil run: error: {exc}", file=sys.stderr)
                return 2
            return _stopped(args, exc, "failed", log_path)
        except KeyboardInterrupt as exc:
            if getattr(exc, "memhil_run_id", None) is None:
                print("memhil run: interrupted before the run started; nothing was stored",
                      file=sys.stderr)
                return 130
            return _stopped(args, exc, "interrupted", log_path)
        except SafeStateError as exc:  # the run completed, the final safe state did not
            if getattr(exc, "memhil_run_id", None) is not None:
                return _stopped(args, exc, "failed", log_path)
            _log_trace(exc)
            print(f"memhil run: the run's data is stored in {args.db}, but the safe state "
                  f"was not confirmed:\n  " + "\n  ".join(exc.report.lines())
                  + f"\n(full trace in {log_path})", file=sys.stderr)
            return EXIT_UNSAFE
        except Exception as exc:  # an instrument or device failure mid-run
            if getattr(exc, "memhil_run_id", None) is None:
                raise
            return _stopped(args, exc, "failed", log_path)
    print(f"run {run_id} completed in {args.db}")
    return 0


def _stopped(args: argparse.Namespace, exc: BaseException, how: str, log_path: Path) -> int:
    run_id = exc.memhil_run_id  # type: ignore[attr-defined]
    where = (["--sim"] if args.sim else ["--station", args.station] if args.station
             else ["--mock-lab", args.mock_lab] if args.mock_lab else [])
    cmd = " ".join(["memhil", "run", args.protocol, *where, "--db", str(args.db),
                    "--resume", str(run_id)])
    _log_trace(exc)
    why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else _first_cause(exc)
    safe, unsafe = _safe_state_lines(exc)
    print(f"memhil run: {how}: {why}\n{safe}\nRun {run_id} in {args.db} holds every "
          f"completed point; resume it with:\n  {cmd}\n(full trace in {log_path})",
          file=sys.stderr)
    if unsafe:
        return EXIT_UNSAFE
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
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
    from memhil.instruments.guard import SafeStateError, SafeStateReport

    backend = getattr(exc, "memhil_backend", None)
    if backend is not None and getattr(backend, "station", None) is None:
        return "(simulator: no instrument)", False
    report = getattr(backend, "last_safe_state", None)
    if report is None:
        for e in _chain(exc):
            report = e.report if isinstance(e, SafeStateError) else getattr(e, "safe_state", None)
            if report is not None:
                break
    if not isinstance(report, SafeStateReport):
        return "Safe state NOT CONFIRMED: no confirming query answered", True
    head = ("Safe state confirmed by the instruments:" if report.confirmed else
            "Safe state NOT CONFIRMED for " + ", ".join(e.component for e in report.unconfirmed)
            + " (check the bench before touching it):")
    return "\n".join([head, *("  " + line for line in report.lines())]), not report.confirmed


class _ConsoleLine(logging.Formatter):
    """One line per warning on the console (``memhil: warning: ...``); traces stay in the
    log file."""

    def format(self, record: logging.LogRecord) -> str:
        return f"memhil: {record.levelname.lower()}: {record.getMessage()}"


#: Loggers whose warnings are findings about the data (an open-circuit unit, a re-applied
#: unit) and reach the console; instrument chatter during recovery stays in the log file.
_CONSOLE_LOGGERS = ("memhil.protocols", "memhil.runs.protocol_run")


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
    logging.getLogger("memhil.cli.app").error("memhil run stopped", exc_info=exc)


if __name__ == "__main__":
    sys.exit(main())
