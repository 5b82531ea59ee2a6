"""Sweep files: ``load_sweep_file(path) -> SweepFile``, every trial expanded, validated
and pre-flighted before any of them runs.

A sweep file (YAML)::

    base: ../protocols/d2d_map.yaml            # a run file (relative: to this file)
    name: d2d_spread                           # optional (default: the file stem)
    grid:                                      # cartesian product of dotted keys of the base
      backend.sim.device.g_max_dtod: [0.0, 0.1, 0.2]
      backend.sim.rows: [8, 32]
    seeds: [0, 1, 2]                           # or a count (3: seeds 0, 1, 2)
    seed_key: backend.sim.seed                 # optional: the key a seed sets (default per kind)
    random:                                    # optional: n points drawn from a space
      n: 8
      seed: 0                                  # the draw's own seed (default 0)
      space: {params.v_ltp: {uniform: [1.0, 2.0]}, params.width_s: {loguniform: [1e-8, 1e-6]}}
    resources: {num_cpus: 1, num_gpus: 0.25}   # per trial, as Ray names them

Trials are the product grid x random points x seeds (seeds innermost), numbered from 0.
A trial is its base file's content with its keys set (``a.b.c: v`` sets ``c`` inside
``a.b``, creating missing mappings); the value is read as if written in the base file
(relative paths: to the base file's folder). Each trial is loaded and pre-flighted by its
kind (``memhil.sweeps.run_kinds``); an error names the sweep file and the key that set
the offending value (``grid.<key>``, ``random.space.<key>``, ``seeds``), else the trial.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from memhil.core.config import from_mapping, load_yaml, require
from memhil.core.errors import ConfigError, LimitError
from memhil.sweeps.run_kinds import RunKind, kind_of

__all__ = [
    "SWEEP_FILE_KEYS",
    "SweepFile",
    "Trial",
    "TrialResources",
    "load_sweep_file",
    "set_dotted",
]

SWEEP_FILE_KEYS = ("base", "name", "grid", "seeds", "seed_key", "random", "resources")
_DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")


@dataclass(frozen=True)
class TrialResources:
    """What one trial holds while it runs, in Ray's names: CPUs and GPUs (fractions
    allowed), ``memory`` in bytes (0: not reserved) and custom ``resources``."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.num_cpus >= 0, "num_cpus", f"must be >= 0, got {self.num_cpus}")
        require(self.num_gpus >= 0, "num_gpus", f"must be >= 0, got {self.num_gpus}")
        require(self.memory >= 0, "memory", f"must be >= 0 bytes, got {self.memory}")
        for k, v in self.resources.items():
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            require(ok, f"resources.{k}", f"must be a positive number, got {v!r}")

    def ray_options(self, station: str | None) -> dict[str, Any]:
        """The options of the trial's Ray task; a station-bound trial also holds its
        station's resource (capacity 1), so trials on one station never overlap."""
        custom = dict(self.resources)
        if station is not None:
            custom[station] = 1.0
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            opts["memory"] = self.memory
        if custom:
            opts["resources"] = custom
        return opts


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its number, axis values (grid and random keys), seed, every
    key it sets in the base file, and the station it holds (None: none)."""

    index: int
    axes: dict[str, Any]
    seed: int | None
    overrides: dict[str, Any]
    station: str | None = None

    def label(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.axes.items()]
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return f"trial {self.index} ({', '.join(parts) or 'the base file'})"


@dataclass(frozen=True)
class SweepFile:
    """A validated sweep file: its base run file and every trial (pre-flighted)."""

    path: Path
    name: str
    base: Path
    kind: RunKind
    base_data: dict  # the base file's content, normalized by its kind
    axes: list[str]
    seed_key: str | None
    trials: list[Trial]
    resources: TrialResources
    _where: dict[str, str] = field(default_factory=dict, repr=False)  # key -> sweep-file key

    def trial_data(self, trial: Trial) -> dict:
        """The base file's content with ``trial``'s keys set."""
        data = copy.deepcopy(self.base_data)
        for key, value in trial.overrides.items():
            set_dotted(data, key, value, source=str(self.path), where=self._where.get(key, key))
        return data

    def stations(self) -> set[str]:
        return {t.station for t in self.trials if t.station is not None}

    def definition(self) -> dict:
        """The sweep as plain data, stored with the sweep's run (``--resume`` checks that
        the file still expands to these trials)."""
        return {
            "file": str(self.path),
            "name": self.name,
            "base": str(self.base),
            "kind": self.kind.name,
            "axes": list(self.axes),
            "seed_key": self.seed_key,
            "trials": [{"trial": t.index, "axes": t.axes, "seed": t.seed} for t in self.trials],
            "resources": {
                "num_cpus": self.resources.num_cpus,
                "num_gpus": self.resources.num_gpus,
                "memory": self.resources.memory,
                "resources": dict(self.resources.resources),
            },
        }


def set_dotted(
    data: dict, key: str, value: Any, *, source: str | None = None, where: str | None = None
) -> None:
    """Set ``a.b.c`` in ``data`` (missing mappings created); a part that is not a mapping
    in the base file is a ConfigError naming the sweep file's key ``where``."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(
                where or key,
                f"'{'.'.join(parts[: i + 1])}' is {nxt!r} in the base file, not a mapping: "
                f"spell it as a mapping there to sweep a key inside it",
                source,
            )
        node = nxt
    node[parts[-1]] = value


def _dotted_key(key: Any, where: str, src: str) -> str:
    ok = isinstance(key, str) and all(p.isidentifier() for p in key.split("."))
    if not ok:
        raise ConfigError(where, f"expected a dotted key like 'params.v_ltp', got {key!r}", src)
    return key


def _grid(raw: Any, src: str) -> dict[str, list]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("grid", f"expected a mapping of dotted keys to lists, got {raw!r}", src)
    out = {}
    for key, values in raw.items():
        _dotted_key(key, f"grid.{key}", src)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}", f"expected a non-empty list, got {values!r}", src)
        out[key] = values
    return out


def _seeds(raw: Any, src: str) -> list[int] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise ConfigError("seeds", f"a count must be >= 1, got {raw}", src)
        return list(range(raw))
    if not isinstance(raw, list) or not raw:
        raise ConfigError("seeds", f"expected a list of integers or a count, got {raw!r}", src)
    for i, s in enumerate(raw):
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(f"seeds[{i}]", f"expected an integer, got {s!r}", src)
    if len(set(raw)) != len(raw):
        raise ConfigError("seeds", f"repeats a seed: {raw}", src)
    return list(raw)


def _random_points(raw: Any, src: str) -> list[dict[str, Any]]:
    """``n`` points drawn from ``space`` with numpy's seeded generator (reproducible)."""
    if raw is None:
        return [{}]
    if not isinstance(raw, Mapping):
        raise ConfigError("random", f"expected {{n, space, seed}}, got {raw!r}", src)
    unknown = sorted(set(raw) - {"n", "space", "seed"})
    if unknown:
        raise ConfigError(f"random.{unknown[0]}", "unknown key (allowed: n, space, seed)", src)
    n, seed, space = raw.get("n"), raw.get("seed", 0), raw.get("space")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("random.n", f"expected a count >= 1, got {n!r}", src)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("random.seed", f"expected an integer, got {seed!r}", src)
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("random.space", f"expected a mapping of dotted keys, got {space!r}", src)
    rng = np.random.default_rng(seed)
    draws: dict[str, list] = {}
    for key, dist in space.items():
        where = f"random.space.{key}"
        _dotted_key(key, where, src)
        if (
            not isinstance(dist, Mapping)
            or len(dist) != 1
            or next(iter(dist)) not in _DISTRIBUTIONS
        ):
            raise ConfigError(
                where, f"expected one of {{{', '.join(_DISTRIBUTIONS)}: ...}}, got {dist!r}", src
            )
        [(law, args)] = dist.items()
        draws[key] = _draw(law, args, n, rng, where, src)
    return [{k: draws[k][i] for k in draws} for i in range(n)]


def _draw(law: str, args: Any, n: int, rng: Any, where: str, src: str) -> list:
    if law == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.choice", f"expected a non-empty list, got {args!r}", src)
        return [args[int(i)] for i in rng.integers(0, len(args), size=n)]
    ok = (
        isinstance(args, list)
        and len(args) == 2
        and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        and all(math.isfinite(a) for a in args)
        and args[0] <= args[1]
    )
    if not ok:
        raise ConfigError(
            f"{where}.{law}", f"expected [low, high] with low <= high, got {args!r}", src
        )
    lo, hi = args
    if law == "uniform":
        return [float(x) for x in rng.uniform(lo, hi, size=n)]
    if law == "randint":
        if not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{where}.randint", f"expected integer bounds, got {args!r}", src)
        return [int(x) for x in rng.integers(lo, hi, size=n, endpoint=True)]
    if lo <= 0:
        raise ConfigError(f"{where}.loguniform", f"bounds must be > 0, got {args!r}", src)
    return [float(x) for x in np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))]


def _expand(
    grid: dict[str, list],
    points: list[dict[str, Any]],
    seeds: list[int] | None,
    seed_key: str | None,
) -> list[Trial]:
    trials: list[Trial] = []
    combos = list(itertools.product(*grid.values())) if grid else [()]
    for combo in combos:
        for point in points:
            for seed in seeds if seeds is not None else [None]:
                axes = {**dict(zip(grid, combo)), **point}
                overrides = dict(axes)
                if seed is not None and seed_key is not None:
                    overrides[seed_key] = seed
                trials.append(Trial(len(trials), axes, seed, overrides))
    return trials


def _axis_of(exc: BaseException, keys: list[str]) -> str | None:
    """The swept key an error is about, from the error's own fields (a ConfigError's key,
    a limit error's protocol parameters): equal, inside it, or reported relative to a
    nested section (``rows`` for ``backend.sim.rows``)."""
    names: list[str] = []
    if isinstance(exc, ConfigError):
        names.append(exc.key)
    params = getattr(exc, "params", None)
    if isinstance(exc, LimitError) and isinstance(params, (list, tuple)):
        names += [f"params.{p}" for p in params]
    for name in names:
        for key in keys:
            if name == key or name.startswith(f"{key}.") or name.startswith(f"{key}["):
                return key
            if key.endswith(f".{name}"):
                return key
    return None


def _check_trial(sweep: SweepFile, trial: Trial) -> Trial:
    """Load and pre-flight ``trial``; an error names the sweep file and the key."""
    src = str(sweep.path)
    try:
        obj = sweep.kind.load(sweep.trial_data(trial), sweep.base)
        sweep.kind.preflight(obj)
        return replace(trial, station=sweep.kind.station(obj))
    except (ConfigError, LimitError) as exc:
        if isinstance(exc, ConfigError) and exc.source == src:
            raise  # already the sweep file's own key
        key = _axis_of(exc, list(trial.overrides))
        if key is None:
            raise ConfigError("base", f"{trial.label()}: {exc}", src) from None
        raise ConfigError(
            sweep._where.get(key, key),
            f"{trial.overrides[key]!r} fails in {trial.label()}: {exc}",
            src,
        ) from None


def load_sweep_file(path: str | Path) -> SweepFile:
    """Parse a sweep file, expand its trials and load and pre-flight every one of them
    (no instrument contacted, no database opened, Ray not started)."""
    path = Path(path).resolve()
    src = str(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - set(SWEEP_FILE_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (allowed: {list(SWEEP_FILE_KEYS)})", src)
    if not isinstance(data.get("base"), str):
        raise ConfigError("base", f"expected the path of a run file, got {data.get('base')!r}", src)
    base = (path.parent / Path(data["base"]).expanduser()).resolve()
    if not base.is_file():
        raise ConfigError("base", f"no such file: {base}", src)
    base_raw = load_yaml(base)
    kind = kind_of(base_raw, base)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ConfigError("name", f"expected a non-empty string, got {name!r}", src)
    grid = _grid(data.get("grid"), src)
    points = _random_points(data.get("random"), src)
    seeds = _seeds(data.get("seeds"), src)
    seed_key = data.get("seed_key", kind.seed_key if seeds is not None else None)
    if seed_key is not None:
        _dotted_key(seed_key, "seed_key", src)
    axes = list(grid) + list(points[0])
    where = {k: f"grid.{k}" for k in grid} | {k: f"random.space.{k}" for k in points[0]}
    for key in axes:
        if key in grid and key in points[0]:
            raise ConfigError(f"random.space.{key}", "already a grid key", src)
    if seed_key is not None:
        if seed_key in where:
            raise ConfigError("seed_key", f"{seed_key!r} is also swept ({where[seed_key]})", src)
        where[seed_key] = "seeds"
    resources = from_mapping(
        TrialResources, data.get("resources") or {}, source=src, prefix="resources"
    )
    sweep = SweepFile(
        path=path,
        name=name,
        base=base,
        kind=kind,
        base_data=kind.normalize(base_raw),
        axes=axes,
        seed_key=seed_key,
        trials=[],
        resources=resources,
        _where=where,
    )
    trials = _expand(grid, points, seeds, seed_key)
    checked = [_check_trial(sweep, t) for t in trials]
    return replace(sweep, trials=checked)
