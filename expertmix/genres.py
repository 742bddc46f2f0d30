"""Genre profiles: YAML files in ``genres/`` that tailor the plan and the master targets.

A profile may ``inherit`` from another (usually ``base``); keys it sets replace the parent's,
nested mappings merge key by key. Profiles are validated at load time; an error names the file,
the line and the field.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError, RulebookError
from .io import yaml_compose, yaml_load
from .resources import data_dir


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenreMaster(_Model):
    preset: str = Field("streaming", description="delivery preset (see `expertmix presets`)")
    target_lufs: float | None = Field(None, ge=-36.0, le=-5.0, description="overrides the preset's loudness")
    ceiling_dbtp: float | None = Field(None, ge=-9.0, le=0.0, description="overrides the preset's true-peak ceiling")
    glue_ratio: float = Field(2.0, ge=1.0, le=10.0, description="master glue compressor ratio")
    glue_threshold_db: float = Field(-16.0, ge=-40.0, le=0.0,
                                     description="glue threshold, on the mix normalised to -20 LUFS")


class GenreReverb(_Model):
    decay_s: float = Field(1.6, ge=0.2, le=8.0, description="main reverb decay time")
    send_offset_db: float = Field(0.0, ge=-20.0, le=10.0, description="added to every reverb send")
    lowpass_hz: float = Field(6000.0, ge=1000.0, le=20000.0, description="reverb damping")


class GenreProfile(_Model):
    name: str
    inherits: str | None = None
    description: str = ""
    master: GenreMaster = Field(default_factory=GenreMaster)
    lead_vocal_offset_db: float = Field(0.0, ge=-6.0, le=8.0,
                                        description="extra level of the lead vocal over the role template")
    low_end_offset_db: float = Field(0.0, ge=-6.0, le=6.0, description="extra level of kick and bass")
    drums_offset_db: float = Field(0.0, ge=-6.0, le=6.0, description="extra level of the drum kit")
    compression: Literal["gentle", "moderate", "heavy"] = Field("moderate", description="compression style")
    reverb: GenreReverb = Field(default_factory=GenreReverb)
    stereo_width: float = Field(1.0, ge=0.0, le=2.0, description="width of pads, overheads and stereo keys")
    delay_note: str = Field("1/8.", description="lead-vocal delay note value")
    band_balance_db: dict[str, float] = Field(
        default_factory=dict,
        description="target long-term band levels of the mix relative to its total power, dB, per band of "
                    "expertmix.descriptor_specs.BANDS_HZ (the master's tonal balance aims toward these)")

    @field_validator("band_balance_db")
    @classmethod
    def _bands(cls, v: dict[str, float]) -> dict[str, float]:
        from .descriptor_specs import BANDS_HZ

        for band, level in v.items():
            if band not in BANDS_HZ:
                raise ValueError(f"unknown band {band!r}; bands: {', '.join(BANDS_HZ)}")
            if not -60.0 <= level <= 0.0:
                raise ValueError(f"band level {level} dB for {band!r} must be in [-60, 0]")
        return v


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(parent)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml_file(path: Path) -> tuple[Any, str]:
    """Safe-load a rule or genre YAML file: (data, text). Bad YAML raises RulebookError with the
    file and line (shared by genre profiles and the rulebook)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulebookError(f"cannot read: {exc}", file=str(path)) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RulebookError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(path),
                            line=mark.line + 1 if mark else None) from None
    return data, text


def _read(path: Path) -> tuple[dict[str, Any], str]:
    data, text = read_yaml_file(path)
    if not isinstance(data, dict):
        raise RulebookError("a genre profile must be a YAML mapping", file=str(path))
    return data, text


def genre_dirs(extra: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for profiles: a user's folder first, then the bundled ``genres/``."""
    dirs = [Path(extra)] if extra else []
    dirs.append(data_dir("genres"))
    return dirs


def available_genres(extra: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Genre name -> profile file (a user's folder overrides the bundled one)."""
    found: dict[str, Path] = {}
    for d in reversed(genre_dirs(extra)):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                found[p.stem] = p
    return found


def load_genre(name: str, extra: str | os.PathLike[str] | None = None) -> GenreProfile:
    """Load a profile by name, resolving inheritance."""
    files = available_genres(extra)
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {"hiphop": "hip-hop", "rap": "hip-hop", "edm": "electronic", "classical": "orchestral",
               "r&b": "rnb", "randb": "rnb", "folk": "acoustic"}
    key = aliases.get(key, key)
    if key not in files:
        import difflib

        close = difflib.get_close_matches(key, list(files), n=1)
        raise InputError(f"unknown genre {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                         hint=f"use one of {', '.join(sorted(n for n in files if n != 'base'))}")
    chain: list[tuple[Path, dict[str, Any], str]] = []
    seen: set[str] = set()
    cur: str | None = key
    while cur is not None:
        if cur in seen:
            raise RulebookError(f"inheritance loop through {cur!r}", file=str(files[key]), field="inherits")
        seen.add(cur)
        if cur not in files:
            raise RulebookError(f"inherits from unknown genre {cur!r}", file=str(chain[-1][0]), field="inherits")
        data, text = _read(files[cur])
        chain.append((files[cur], data, text))
        cur = data.get("inherits")
    merged: dict[str, Any] = {}
    for _path, data, _text in reversed(chain):
        merged = _merge(merged, data)
    merged["name"] = key
    try:
        return GenreProfile.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field_path = ".".join(str(p) for p in err["loc"])
        # report the most derived file that sets the field, with its line
        for path, data, text in chain:
            node: Any = data
            for part in err["loc"]:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None or err["type"] == "extra_forbidden":
                line = _line_of(text, err["loc"])
                raise RulebookError(f"{err['msg']} (got {err.get('input')!r})", file=str(path), line=line,
                                    field=field_path) from None
        raise RulebookError(err["msg"], file=str(chain[0][0]), field=field_path) from None


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    node = yaml_compose(text)
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == part:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line
