"""Config files and ``--set`` overrides: the config a command runs with, layered preset < file < overrides.

``load_config`` builds the config a command runs with: the named preset (twm.presets), a YAML file on
top of it, ``section.key=value`` overrides on top of both. Each layer is a mapping of sections; they are
merged key by key and checked once, at the end, by ``Config.from_dict`` (twm.config), which coerces each
value to its field's type and range.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from twm.config import Config, ConfigError, closest_keys, read_config_file
from twm.presets import PRESETS


def _layered(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Section-wise union of config mappings: later layers win key by key, a section is never replaced whole."""
    out: dict[str, Any] = {}
    for layer in layers:
        for section, values in layer.items():
            if isinstance(values, Mapping) and isinstance(out.get(section, {}), Mapping):
                out[section] = {**out.get(section, {}), **values}
            else:  # not a mapping: from_dict reports it
                out[section] = values
    return out


def load_config(
    preset: str = "atari100k",
    overrides: Iterable[str] = (),
    config_file: str | Path | None = None,
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """The config a command runs with: the preset, a YAML file on top of it, ``--set`` overrides on top
    of both (``--game`` is one of them), then ``sections`` (``twm.train``'s keyword overrides), validated
    once, at the end."""
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown preset {preset!r}{hint}; valid presets: {', '.join(PRESETS)}")
    layers: list[Mapping[str, Any]] = [PRESETS[preset]]
    if config_file is not None:
        layers.append(read_config_file(config_file))
    layers.append(parse_overrides(overrides))
    if sections:
        layers.append(sections)
    return Config.from_dict(_layered(*layers))


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars (1e-4, true, [1, 2])."""
    nested = parse_overrides(overrides)
    return Config.from_dict(nested, base=cfg) if nested else cfg


def parse_overrides(overrides: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` strings as a mapping of sections (values parsed as YAML scalars)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        if "." not in dotted:
            raise ConfigError(f"override key {dotted!r} must be section.key; {closest_keys(dotted)}")
        section, key = dotted.split(".", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section.strip(), {})[key.strip()] = value
    return nested


def describe_keys() -> list[tuple[str, Any, str]]:
    """(section.key, paper default, help) for every key."""
    out = []
    cfg = Config()
    for s in dataclasses.fields(Config):
        section = getattr(cfg, s.name)
        for f in dataclasses.fields(section):
            out.append((f"{s.name}.{f.name}", getattr(section, f.name), f.metadata.get("help", "")))
    return out
