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
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not a text file (YAML or JSON, UTF-8): byte "
                          f"{exc.start} is not UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"could not read config file {path!r}: {exc.strerror or exc}") from exc
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
