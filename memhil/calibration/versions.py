"""Which calibration data a run used: ``calibration_versions(backend)`` -> the run store's
``calibration_versions`` metadata.

Recorded, per place it is used, for every fitted device-parameter file (a simulator's
``device: fitted.yaml``, a station's ``chip.device`` or the mock chip's ``mock.device``
given as a file): the file path, the SHA-256 of its content (what was really loaded, even
if a file of the same name is rewritten later) and the version field the fit carries
(``<content hash>@<UTC time>``, from the ``.fit.json`` sidecar).
Built-in device models named by string (``"vteam"``) are not calibration data: nothing
is recorded for them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeGuard


def _is_file_ref(device: Any) -> TypeGuard[str | Path]:
    return isinstance(device, (str, Path)) and str(device).endswith((".yaml", ".yml"))


def file_version(path: str | Path) -> dict[str, Any]:
    """Path, content hash and (for a fitted model with a sidecar) the fit's version."""
    from memhil.calibration.fit.neurosim import FitResult

    path = Path(path).expanduser().resolve()
    entry: dict[str, Any] = {"path": str(path)}
    if not path.exists():
        entry["error"] = "file not found"
        return entry
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    side = FitResult.sidecar_path(path)
    if side.exists():
        try:
            meta = json.loads(side.read_text()).get("memhil_fit", {})
            entry["version"] = meta.get("version")
            entry["fit_source"] = meta.get("source")
        except (ValueError, OSError) as exc:
            entry["version"] = None
            entry["error"] = f"unreadable sidecar {side.name}: {exc}"
    else:
        entry["version"] = None
    if _is_file_ref(path):
        try:
            from memhil.core.config import load_yaml

            entry["model"] = load_yaml(path).get("model")
        except Exception:  # noqa: BLE001 - metadata must not stop a run
            pass
    return entry


def calibration_versions(
    backend: Any, description: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """``{use: {path, sha256, version, ...}}`` for the calibration files ``backend`` uses
    (its ``describe()["calibration_files"]``, or ``description``'s when given); ``{}`` when
    it uses none."""
    desc = backend.describe() if description is None else description
    out: dict[str, dict[str, Any]] = {
        use: file_version(path) for use, path in desc.get("calibration_files", {}).items()
    }
    return out


__all__ = ["calibration_versions", "file_version"]
