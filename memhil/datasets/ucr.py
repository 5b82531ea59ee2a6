"""Time-series classification sets whose .ts files ship inside the sktime wheel (offline).

sktime's own ``load_UCR_UEA_dataset`` falls back to downloading; we read the bundled files
directly with its ``load_from_tsfile`` so a missing file is an error, never a network call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from memhil.datasets.containers import ClassificationData, Split

#: Notes on the bundled sets memhil's examples use; :func:`classification_sets` lists all.
BUNDLED = {
    "JapaneseVowels": "12-dim LPC cepstra, 9 speakers, length 7..29, 270 train / 370 test",
    "ACSF1": "univariate power consumption, T = 1460, 10 classes, 100 / 100",
    "BasicMotions": "6-dim accelerometer/gyroscope, T = 100, 4 classes, 40 / 40",
    "GunPoint": "univariate, T = 150, 2 classes, 50 / 150",
    "OSULeaf": "univariate, T = 427, 6 classes, 200 / 242",
    "PLAID": "univariate appliance currents, T = 100..1344, 11 classes, 537 / 537",
}


def _data_dir() -> Path:
    try:
        import sktime
    except ImportError as exc:  # pragma: no cover - sktime is a declared dependency
        raise ImportError("memhil.datasets.ucr needs sktime (pip install sktime==1.2.0)") from exc
    return Path(sktime.__file__).parent / "datasets" / "data"


def classification_sets() -> list[str]:
    """Every classification set the installed sktime wheel ships: a ``NAME/NAME_TRAIN.ts``
    and ``NAME_TEST.ts`` pair whose header declares class labels (``@classLabel true``)."""
    names = []
    for train in sorted(_data_dir().glob("*/*_TRAIN.ts")):
        name = train.parent.name
        if train.name != f"{name}_TRAIN.ts" or not (train.parent / f"{name}_TEST.ts").exists():
            continue
        with train.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                low = line.strip().lower()
                if low.startswith("@classlabel"):
                    if low.split()[1:2] == ["true"]:
                        names.append(name)
                    break
                if low.startswith("@data"):
                    break
    return names


def _read_split(name: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    from sktime.datasets import load_from_tsfile

    path = _data_dir() / name / f"{name}_{split}.ts"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is not in the installed sktime wheel; bundled sets: {classification_sets()}"
        )
    frame, labels = load_from_tsfile(str(path), return_data_type="nested_univ")
    # nested frame: one column per channel, one pandas Series per cell -> (T_i, D) arrays
    series = [
        np.stack(
            [frame.iloc[i, c].to_numpy(dtype=np.float64) for c in range(frame.shape[1])], axis=-1
        )
        for i in range(frame.shape[0])
    ]
    return series, np.asarray(labels)


def load_ucr(name: str) -> ClassificationData:
    """Load a bundled UCR/UEA classification set (any of :func:`classification_sets`) as
    (N, T, D) float32 sequences, zero-padded at the end.

    Labels are mapped to 0..C-1 in sorted order of the original label strings; ``lengths``
    is set when lengths vary (JapaneseVowels, PLAID).
    """
    available = classification_sets()
    if name not in available:
        raise KeyError(f"unknown dataset {name!r}; bundled classification sets: {available}")
    tr_series, tr_labels = _read_split(name, "TRAIN")
    te_series, te_labels = _read_split(name, "TEST")
    classes = sorted(set(tr_labels.tolist()) | set(te_labels.tolist()), key=_label_key)
    index = {c: i for i, c in enumerate(classes)}
    t_max = max(s.shape[0] for s in tr_series + te_series)

    def build(series: list[np.ndarray], labels: np.ndarray) -> Split:
        lengths = torch.tensor([s.shape[0] for s in series], dtype=torch.long)
        x = torch.zeros(len(series), t_max, series[0].shape[1], dtype=torch.float32)
        for i, s in enumerate(series):  # ragged -> padded copy, once at load time
            x[i, : s.shape[0]] = torch.from_numpy(np.nan_to_num(s)).float()
        y = torch.tensor([index[c] for c in labels.tolist()], dtype=torch.long)
        ragged = bool((lengths != t_max).any())
        return Split(x, y, lengths if ragged else None)

    train, test = build(tr_series, tr_labels), build(te_series, te_labels)
    if (train.lengths is None) != (test.lengths is None):  # keep both or neither
        full = lambda s: s.lengths if s.lengths is not None else torch.full((len(s),), t_max)
        train, test = Split(train.x, train.y, full(train)), Split(test.x, test.y, full(test))
    return ClassificationData(name, train, test, len(classes))


def japanese_vowels() -> ClassificationData:
    """JapaneseVowels: 12 channels, T ≤ 29 (padded), 9 classes."""
    return load_ucr("JapaneseVowels")


def acsf1() -> ClassificationData:
    """ACSF1: univariate, T = 1460, 10 classes — the long-sequence set (T ≥ 1000)."""
    return load_ucr("ACSF1")


def plaid() -> ClassificationData:
    """PLAID: univariate appliance current, T = 100..1344 (padded, ``lengths`` set),
    11 classes, 537 / 537: the long-sequence set with the most sequences."""
    return load_ucr("PLAID")


def _label_key(label: str):
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)
