"""The ``memhil`` command."""

from __future__ import annotations

import argparse
import sys


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
    from memhil import cli_runs
    cli_runs.add_parser(sub)
    args = ap.parse_args(argv)

    if args.command == "demo":
        from memhil.demo import run_demo
        run_demo(rows=args.size, cols=args.size, db=args.db, out_dir=args.out, seed=args.seed)
    elif args.command == "showcase":
        from memhil.showcase import run_showcase
        run_showcase(rows=args.rows, outputs=args.outputs, seed=args.seed,
                 torch_device=args.torch_device)
    elif args.command == "mock-lab":
        from memhil.mock_hw.lab import serve as serve_lab
        serve_lab(args.station, ready_file=args.write_station)
    elif args.command == "runs":
        from memhil import cli_runs
        return cli_runs.run(args)
    elif args.command == "models":
        from memhil.backends.sim.devices import device_model_names
        print("\n".join(device_model_names()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
