"""Small helpers shared by the tasks: instantiating config lists, writing run results."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from memsig.data.io import atomic_write_bytes

log = logging.getLogger(__name__)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group mapping that has a ``_target_``."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as pretty JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def task_overrides() -> list[str]:
    """The command-line overrides of the current Hydra job ([] outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
