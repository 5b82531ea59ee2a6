"""Experiment files, the siblings of protocol files: ``load_experiment_file(path)``, parsed
and validated (file:key errors) before any instrument is contacted.

An experiment file (YAML)::

    algorithm: pruning            # a registered algorithm (memhil.algorithms.experiment)
    dataset: {name: digits, classes: [0, 1, 2, 3]}   # a memhil.datasets loader and options
    model: {...}                  # the algorithm's typed model config
    train: {epochs: 5, seed: 0, checkpoint_every: 1, ...}
    deploy: {...}                 # mapping, programming, read settings
    backend: sim | {sim: {...}} | {mock_lab: station.yaml} | {station: bench.yaml}
    name: run name                # optional (default: the file stem)
    description: free text        # optional

``dataset`` options are the loader's keyword arguments, plus three that apply to any
classification set: ``standardize`` (zero mean, unit variance from the training split),
``features`` (a list of feature indices to keep) and ``classes`` (a list of labels to keep,
relabelled 0..k-1 in that order). The backend entry is resolved like a protocol file's
(``resolve_backend_config``: paths against the file's folder).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from memhil.algorithms.experiment import Experiment, ExperimentConfig, get_algorithm
from memhil.core.config import load_yaml
from memhil.core.errors import ConfigError
from memhil.runs.protocol_file import plain, resolve_backend_config

__all__ = [
    "EXPERIMENT_FILE_KEYS",
    "ExperimentFile",
    "dataset_loaders",
    "is_experiment_file",
    "load_dataset",
    "load_experiment_file",
    "experiment_file_from_mapping",
    "with_source",
]

EXPERIMENT_FILE_KEYS = (
    "algorithm",
    "dataset",
    "model",
    "train",
    "deploy",
    "backend",
    "name",
    "description",
)
#: dataset options the loader applies itself (to any ClassificationData)
_COMMON_DATASET_OPTIONS = ("standardize", "features", "classes")


@dataclass(frozen=True)
class ExperimentFile:
    path: Path
    algorithm: str
    experiment: type[Experiment]
    dataset: dict  # {name: ..., options...} as written
    data: Any  # what the dataset loader returned (options applied)
    data_identity: dict  # name, options, content hash
    config: ExperimentConfig
    sections: dict  # model / train / deploy mappings as written
    backend: Any  # resolved backend config (paths absolute), or None
    name: str
    description: str

    def as_config(self) -> dict:
        """The file's content as plain data (run metadata)."""
        return {
            "file": str(self.path),
            "algorithm": self.algorithm,
            "dataset": plain(self.dataset),
            **{k: plain(v) for k, v in self.sections.items()},
            "backend": plain(self.backend),
            "name": self.name,
            "description": self.description,
        }


def is_experiment_file(data: Mapping[str, Any]) -> bool:
    """Whether a parsed run file is an experiment (it names an ``algorithm``), not a
    protocol."""
    return "algorithm" in data and "protocol" not in data


def dataset_loaders() -> dict[str, Callable[..., Any]]:
    """The loaders an experiment file's ``dataset.name`` accepts: every public loader of
    ``memhil.datasets`` by its function name."""
    import memhil.datasets as ds

    return {
        n: getattr(ds, n)
        for n in ds.__all__
        if n[:1].islower() and callable(getattr(ds, n)) and n != "standardize"
    }


def with_source(exc: ConfigError, source: str) -> ConfigError:
    """``exc`` naming ``source`` when it names no file yet."""
    return exc if exc.source is not None else ConfigError(exc.key, exc.reason, source)


def load_dataset(spec: Any, source: str | None = None) -> tuple[Any, dict, dict]:
    """(data, spec as a mapping, identity) for a ``dataset:`` entry (a name or a mapping
    with ``name`` and options); errors name ``dataset.<key>``."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigError("dataset", f"expected {{name: LOADER, ...options}}, got {spec!r}", source)
    loaders = dataset_loaders()
    name = spec["name"]
    if name not in loaders:
        raise ConfigError(
            "dataset.name", f"unknown dataset {name!r} (known: {sorted(loaders)})", source
        )
    fn = loaders[name]
    options = {k: v for k, v in spec.items() if k != "name"}
    own = {k: options.pop(k) for k in _COMMON_DATASET_OPTIONS if k in options}
    params = inspect.signature(fn).parameters
    for key, value in options.items():
        if key not in params:
            allowed = sorted([*params, *_COMMON_DATASET_OPTIONS])
            raise ConfigError(
                f"dataset.{key}", f"unknown option of {name} (allowed: {allowed})", source
            )
        default = params[key].default
        if default is not inspect.Parameter.empty and default is not None:
            want = float if isinstance(default, float) else type(default)
            ok = (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                if want is float
                else isinstance(value, want)
            )
            if not ok:
                raise ConfigError(
                    f"dataset.{key}",
                    f"expected {want.__name__} (like the default {default!r}), got {value!r}",
                    source,
                )
    try:
        data = fn(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError("dataset", f"{name}({options}): {exc}", source) from None
    data = _select(data, own, source)
    return data, dict(spec), {"name": name, "options": plain(dict(spec)), "sha256": _digest(data)}


def _select(data: Any, own: Mapping[str, Any], source: str | None) -> Any:
    """Apply the common options (standardize, features, classes) to ClassificationData."""
    from memhil.datasets import ClassificationData, Split, standardize

    if not own:
        return data
    if not isinstance(data, ClassificationData):
        key = f"dataset.{next(iter(own))}"
        raise ConfigError(
            key, f"applies to classification sets only, not {type(data).__name__}", source
        )
    if "features" in own:
        idx = own["features"]
        n = data.n_features
        if (
            not isinstance(idx, list)
            or not idx
            or not all(isinstance(i, int) and 0 <= i < n for i in idx)
        ):
            raise ConfigError(
                "dataset.features",
                f"expected a list of feature indices in [0, {n}), got {idx!r}",
                source,
            )
        cols = torch.tensor(idx)
        data = replace(
            data,
            train=Split(data.train.x[..., cols], data.train.y, data.train.lengths),
            test=Split(data.test.x[..., cols], data.test.y, data.test.lengths),
        )
    if "classes" in own:
        labels = own["classes"]
        k = data.n_classes
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or len(set(labels)) != len(labels)
            or not all(isinstance(c, int) and 0 <= c < k for c in labels)
        ):
            raise ConfigError(
                "dataset.classes",
                f"expected a list of >= 2 distinct labels in [0, {k}), got {labels!r}",
                source,
            )
        lut = torch.full((k,), -1, dtype=torch.long)
        lut[torch.tensor(labels)] = torch.arange(len(labels))

        def keep(s: Split) -> Split:
            y = lut[s.y.long()]
            sub = s.subset(torch.nonzero(y >= 0).flatten())
            return Split(sub.x, lut[sub.y.long()].to(s.y.dtype), sub.lengths)

        data = replace(data, train=keep(data.train), test=keep(data.test), n_classes=len(labels))
    if own.get("standardize", False):
        if not isinstance(own["standardize"], bool):
            raise ConfigError(
                "dataset.standardize", f"expected true/false, got {own['standardize']!r}", source
            )
        data = standardize(data)
    return data


def _digest(data: Any) -> str:
    """A content hash of a dataset's tensors (the run's dataset identity)."""
    h = hashlib.sha256()
    for split in ("train", "test"):
        s = getattr(data, split, None)
        for t in (getattr(s, "x", None), getattr(s, "y", None)):
            if isinstance(t, torch.Tensor):
                h.update(str((tuple(t.shape), t.dtype)).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_experiment_file(path: str | Path) -> ExperimentFile:
    """Parse and validate an experiment file (no instrument is touched)."""
    path = Path(path).resolve()
    return experiment_file_from_mapping(load_yaml(path), path)


def experiment_file_from_mapping(data: Mapping[str, Any], path: str | Path) -> ExperimentFile:
    """Validate the content ``data`` of experiment file ``path`` (a sweep's trial is its
    base file's content with some keys changed): errors name ``path`` and the key;
    relative paths resolve against ``path``'s folder."""
    path = Path(path).resolve()
    src = str(path)
    unknown = sorted(set(data) - set(EXPERIMENT_FILE_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (allowed: {list(EXPERIMENT_FILE_KEYS)})", src)
    if "algorithm" not in data:
        raise ConfigError("algorithm", "missing (a registered algorithm name)", src)
    cls = get_algorithm(data["algorithm"], source=src)
    if "dataset" not in data:
        raise ConfigError("dataset", "missing ({name: LOADER, ...options})", src)
    dataset, spec, identity = load_dataset(data["dataset"], src)
    sections = {}
    for key in ("model", "train", "deploy"):
        sec = data.get(key) or {}
        if not isinstance(sec, Mapping):
            raise ConfigError(key, f"expected a mapping, got {type(sec).__name__}", src)
        sections[key] = dict(sec)
    try:
        config = cls.configure(
            sections["model"], sections["train"], sections["deploy"], source=src, dataset=spec
        )
    except ConfigError as exc:
        raise with_source(exc, src) from None
    run_name = data.get("name", path.stem)
    if not isinstance(run_name, str) or not run_name:
        raise ConfigError("name", f"expected a non-empty string, got {run_name!r}", src)
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise ConfigError("description", "expected a string", src)
    return ExperimentFile(
        path=path,
        algorithm=cls.name,
        experiment=cls,
        dataset=spec,
        data=dataset,
        data_identity=identity,
        config=config,
        sections=sections,
        backend=resolve_backend_config(data.get("backend"), path.parent, src),
        name=run_name,
        description=desc,
    )
