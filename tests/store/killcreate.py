"""Driver for ``test_killed_while_creating_the_database_leaves_no_unusable_file``: create a
run store, killed (``os._exit`` in a forked child) at the n-th SQL statement, for every
``stride``-th n of the creation; then open the path again and write a point. Prints JSON:
the statements of one creation and the kill points whose database was unusable. Run as
``python -m tests.store.killcreate WORKDIR STRIDE``."""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)  # before any torch op: a forked child inherits no thread pool

from qcodes.dataset.sqlite.connection import AtomicConnection  # noqa: E402

from memhil.store import RunStore  # noqa: E402

state = {"n": 0, "kill": None}
real_init = AtomicConnection.__init__


def _trace(statement: str) -> None:
    state["n"] += 1
    if state["n"] == state["kill"]:
        os._exit(86)


def _init(self, *a, **kw):
    real_init(self, *a, **kw)
    self.set_trace_callback(_trace)  # called before each SQL statement runs


AtomicConnection.__init__ = _init


def main(work: str, stride: int) -> None:
    bad, n, total = [], 1, None
    while total is None:
        db = os.path.join(work, f"kill-{n}.db")
        pid = os.fork()
        if pid == 0:
            state["kill"], state["n"] = n, 0
            RunStore(db).close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            total = n - 1
            break
        try:
            with RunStore(db) as store:
                w = store.new_run("x", keys=["a"], values=["v"])
                w.add(a=1, v=1.0)
                w.close()
                assert len(store.load(w.run_id)) == 1
        except Exception as exc:  # noqa: BLE001 - reported
            bad.append([n, f"{type(exc).__name__}: {exc} ({exc.__cause__!r})"])
        n += stride
    print(json.dumps({"statements": total, "bad": bad}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
