"""Reading option files (YAML or JSON mappings): the trainer's --config and a custom --plan file."""
from __future__ import annotations

import json
import os
from typing import Any, Dict

from .errors import ConfigError


def load_config_file(path: str) -> Dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON (.json) mapping of option names to values."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:
        if path.lower().endswith(".json"):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"could not parse config file {path!r}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of option names to values")
    return data
