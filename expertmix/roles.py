"""Instrument roles: the vocabulary, the bus family of each role, and guessing a role from a name.

A role says what a stem *is* (``kick``, ``lead_vocal`` ...); the planner picks processing per
role and routes each role to a bus family (``drums``, ``vocals``, ``music``).

Role detection from a file name is plain token matching, no regular-expression soup:

1. The file name's stem (``"01_Kick In"`` for ``"01_Kick In.wav"``) is split into tokens on
   anything that is not a letter or digit, on camelCase (``LeadVox`` -> ``lead``, ``vox``) and on
   letter/digit boundaries (``track07`` -> ``track``, ``07``), then lower-cased.
2. Multi-word hints (:data:`PHRASE_ALIASES`, e.g. ``backing vocal``, ``bass drum``) are looked up
   first, longest first; a phrase always beats single tokens.
3. Otherwise every token is looked up in :data:`TOKEN_ALIASES`; when several tokens name
   different roles the most specific one wins (:data:`TOKEN_PRIORITY`: ``kick`` beats ``drums``,
   ``pad`` beats ``synth``, ``backing_vocals`` beats ``lead_vocal``).

A token ending in ``s`` that is not in a table is also tried without the ``s`` (``kicks``,
``guitars``, ``bgvs``), so the tables list singular forms only unless the plural is irregular.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from .errors import InputError

#: Every role, in display order, with a one-line description.
ROLES: dict[str, str] = {
    "lead_vocal": "the main sung or rapped vocal",
    "backing_vocals": "backing vocals, harmonies, doubles, ad-libs, choir",
    "kick": "kick drum (in, out, sub kick, 808 kick)",
    "snare": "snare drum (top, bottom) and rim shots",
    "hats": "hi-hat",
    "toms": "rack and floor toms",
    "overheads": "overhead and room microphones, cymbal spots",
    "drums": "a full drum kit or drum loop on one stem",
    "bass": "bass guitar, synth bass, 808 bass, upright bass",
    "guitar": "electric and acoustic guitars, banjo, mandolin, ukulele",
    "keys": "piano, rhodes, wurlitzer, organ, clavinet, mallets",
    "synth": "synth leads, arps, plucks, sequences",
    "pad": "sustained synth pads, drones and textures",
    "strings": "violin, viola, cello, string sections, harp",
    "brass": "trumpet, trombone, horn, tuba, horn sections",
    "winds": "flute, clarinet, oboe, bassoon, saxophone, harmonica",
    "percussion": "hand percussion: shaker, tambourine, congas, claps",
    "fx": "sound effects, risers, impacts, noises, vinyl crackle",
    "other": "anything else (used when no role is recognised)",
}

#: Bus family of each role: ``drums``, ``vocals`` or ``music``.
ROLE_FAMILY: dict[str, str] = {
    "lead_vocal": "vocals",
    "backing_vocals": "vocals",
    "kick": "drums",
    "snare": "drums",
    "hats": "drums",
    "toms": "drums",
    "overheads": "drums",
    "drums": "drums",
    "percussion": "drums",
    "bass": "music",
    "guitar": "music",
    "keys": "music",
    "synth": "music",
    "pad": "music",
    "strings": "music",
    "brass": "music",
    "winds": "music",
    "fx": "music",
    "other": "music",
}

#: Single-token hints: token (lower case, singular) -> role.
TOKEN_ALIASES: dict[str, str] = {
    # vocals
    "vocal": "lead_vocal", "vox": "lead_vocal", "voice": "lead_vocal", "voc": "lead_vocal",
    "vocalist": "lead_vocal", "singer": "lead_vocal", "sing": "lead_vocal", "lv": "lead_vocal",
    "leadvox": "lead_vocal", "leadvocal": "lead_vocal", "rap": "lead_vocal", "spoken": "lead_vocal",
    "bv": "backing_vocals", "bgv": "backing_vocals", "bgvox": "backing_vocals",
    "backings": "backing_vocals", "backup": "backing_vocals", "harmony": "backing_vocals",
    "harmonies": "backing_vocals", "harm": "backing_vocals", "choir": "backing_vocals",
    "adlib": "backing_vocals", "ooh": "backing_vocals", "aah": "backing_vocals",
    "backingvocal": "backing_vocals", "backingvox": "backing_vocals",
    # drums
    "kick": "kick", "kik": "kick", "kck": "kick", "bd": "kick", "bassdrum": "kick",
    "kickin": "kick", "kickout": "kick", "subkick": "kick",
    "snare": "snare", "snr": "snare", "sn": "snare", "sd": "snare", "rimshot": "snare",
    "rim": "snare",
    "hihat": "hats", "hat": "hats", "hh": "hats", "hihats": "hats",
    "tom": "toms", "floortom": "toms", "racktom": "toms",
    "overhead": "overheads", "oh": "overheads", "ohl": "overheads", "ohr": "overheads",
    "ovh": "overheads", "room": "overheads", "cymbal": "overheads", "ride": "overheads",
    "crash": "overheads", "china": "overheads", "splash": "overheads",
    "drum": "drums", "drumkit": "drums", "kit": "drums", "drumloop": "drums",
    "breakbeat": "drums",
    "perc": "percussion", "percussion": "percussion", "shaker": "percussion",
    "tambourine": "percussion", "tamb": "percussion", "conga": "percussion",
    "bongo": "percussion", "clap": "percussion", "handclap": "percussion", "snap": "percussion",
    "fingersnap": "percussion", "cowbell": "percussion", "triangle": "percussion",
    "cabasa": "percussion", "guiro": "percussion", "timbale": "percussion",
    "djembe": "percussion", "cajon": "percussion", "clave": "percussion",
    "woodblock": "percussion", "agogo": "percussion", "timpani": "percussion",
    "tabla": "percussion", "castanet": "percussion",
    # bass
    "bass": "bass", "bas": "bass", "bassline": "bass", "subbass": "bass", "sub": "bass",
    "808": "bass", "upright": "bass", "doublebass": "bass",
    # guitars
    "guitar": "guitar", "gtr": "guitar", "gt": "guitar", "git": "guitar", "guit": "guitar",
    "acoustic": "guitar", "strat": "guitar", "tele": "guitar", "banjo": "guitar",
    "mandolin": "guitar", "ukulele": "guitar", "uke": "guitar", "dobro": "guitar",
    "sitar": "guitar", "bouzouki": "guitar",
    # keys
    "key": "keys", "keys": "keys", "keyboard": "keys", "piano": "keys", "pno": "keys",
    "rhodes": "keys", "wurli": "keys", "wurlitzer": "keys", "organ": "keys", "hammond": "keys",
    "clav": "keys", "clavinet": "keys", "epiano": "keys", "ep": "keys", "harpsichord": "keys",
    "celesta": "keys", "celeste": "keys", "mellotron": "keys", "accordion": "keys",
    "marimba": "keys", "vibe": "keys", "vibraphone": "keys", "xylophone": "keys",
    "glockenspiel": "keys", "glock": "keys", "grand": "keys",
    # synths and pads
    "synth": "synth", "syn": "synth", "synthesizer": "synth", "arp": "synth",
    "arpeggio": "synth", "pluck": "synth", "seq": "synth", "sequence": "synth",
    "moog": "synth", "juno": "synth", "supersaw": "synth", "stab": "synth",
    "pad": "pad", "atmos": "pad", "atmosphere": "pad", "drone": "pad", "texture": "pad",
    # orchestral
    "string": "strings", "strings": "strings", "str": "strings", "violin": "strings",
    "vln": "strings", "vn": "strings", "viola": "strings", "vla": "strings", "cello": "strings",
    "celli": "strings", "vc": "strings", "vlc": "strings", "contrabass": "strings",
    "fiddle": "strings", "harp": "strings", "orchestra": "strings", "orch": "strings",
    "quartet": "strings", "pizz": "strings", "pizzicato": "strings",
    "brass": "brass", "horn": "brass", "trumpet": "brass", "tpt": "brass", "trp": "brass",
    "trombone": "brass", "tbn": "brass", "tbone": "brass", "tuba": "brass",
    "flugelhorn": "brass", "flugel": "brass", "cornet": "brass", "euphonium": "brass",
    "frenchhorn": "brass",
    "wind": "winds", "winds": "winds", "woodwind": "winds", "flute": "winds",
    "piccolo": "winds", "clarinet": "winds", "oboe": "winds", "bassoon": "winds",
    "sax": "winds", "saxophone": "winds", "recorder": "winds", "harmonica": "winds",
    "whistle": "winds", "panpipe": "winds", "bagpipe": "winds", "ocarina": "winds",
    "duduk": "winds", "shakuhachi": "winds", "melodica": "winds",
    # effects
    "fx": "fx", "sfx": "fx", "efx": "fx", "effect": "fx", "riser": "fx", "sweep": "fx",
    "impact": "fx", "uplifter": "fx", "downlifter": "fx", "whoosh": "fx", "noise": "fx",
    "vinyl": "fx", "crackle": "fx", "foley": "fx", "ambience": "fx", "ambiance": "fx",
    "reverse": "fx", "transition": "fx",
    # explicit catch-all
    "other": "other", "misc": "other",
}

#: Multi-word hints: tokens (lower case, singular) -> role. Checked before single tokens,
#: longest first, so ``backing vocal`` beats ``vocal`` and ``bass drum`` beats ``bass``.
PHRASE_ALIASES: dict[tuple[str, ...], str] = {
    ("lead", "vocal"): "lead_vocal", ("lead", "vox"): "lead_vocal",
    ("lead", "voice"): "lead_vocal", ("main", "vocal"): "lead_vocal",
    ("main", "vox"): "lead_vocal", ("male", "vocal"): "lead_vocal",
    ("female", "vocal"): "lead_vocal", ("vocal", "male"): "lead_vocal",
    ("vocal", "female"): "lead_vocal", ("ld", "vox"): "lead_vocal",
    ("backing", "vocal"): "backing_vocals", ("backing", "vox"): "backing_vocals",
    ("backing", "voc"): "backing_vocals", ("background", "vocal"): "backing_vocals",
    ("background", "vox"): "backing_vocals", ("bg", "vocal"): "backing_vocals",
    ("bg", "vox"): "backing_vocals", ("bkg", "vox"): "backing_vocals",
    ("harmony", "vocal"): "backing_vocals", ("vocal", "harmony"): "backing_vocals",
    ("harmony", "vox"): "backing_vocals", ("vox", "harmony"): "backing_vocals",
    ("vocal", "stack"): "backing_vocals", ("vox", "stack"): "backing_vocals",
    ("gang", "vocal"): "backing_vocals", ("gang", "vox"): "backing_vocals",
    ("ad", "lib"): "backing_vocals", ("vocal", "double"): "backing_vocals",
    ("vox", "double"): "backing_vocals", ("double", "vocal"): "backing_vocals",
    ("bass", "drum"): "kick", ("kick", "drum"): "kick", ("snare", "drum"): "snare",
    ("hi", "hat"): "hats", ("high", "hat"): "hats",
    ("floor", "tom"): "toms", ("rack", "tom"): "toms",
    ("drum", "room"): "overheads", ("room", "mic"): "overheads",
    ("bass", "guitar"): "bass", ("synth", "bass"): "bass", ("sub", "bass"): "bass",
    ("double", "bass"): "bass", ("upright", "bass"): "bass", ("electric", "bass"): "bass",
    ("upright", "piano"): "keys", ("grand", "piano"): "keys", ("electric", "piano"): "keys",
    ("e", "piano"): "keys", ("b", "3"): "keys",
    ("bass", "trombone"): "brass", ("bass", "clarinet"): "winds", ("french", "horn"): "brass",
    ("pan", "flute"): "winds", ("tin", "whistle"): "winds",
    ("sound", "effect"): "fx", ("white", "noise"): "fx",
}

#: When single tokens name different roles, the earliest role here wins (specific over generic).
TOKEN_PRIORITY: tuple[str, ...] = (
    "kick", "snare", "hats", "toms", "overheads",
    "backing_vocals", "lead_vocal",
    "bass", "guitar", "keys", "pad", "synth", "strings", "brass", "winds",
    "percussion", "drums", "fx", "other",
)

assert set(ROLE_FAMILY) == set(ROLES) == set(TOKEN_PRIORITY)
assert set(TOKEN_ALIASES.values()) <= set(ROLES) and set(PHRASE_ALIASES.values()) <= set(ROLES)


def _split_chunk(chunk: str) -> list[str]:
    """Split one run of letters/digits on camelCase and letter/digit boundaries.

    ``"LeadVox"`` -> ``["Lead", "Vox"]``, ``"track07"`` -> ``["track", "07"]``,
    ``"ABCDef"`` -> ``["ABC", "Def"]``; an all-caps plural stays whole (``"BGVs"``).
    """
    tokens: list[str] = []
    current = ""
    for i, ch in enumerate(chunk):
        if current:
            prev = current[-1]
            nxt = chunk[i + 1] if i + 1 < len(chunk) else ""
            after = chunk[i + 2] if i + 2 < len(chunk) else ""
            digit_edge = prev.isdigit() != ch.isdigit()
            lower_to_upper = prev.islower() and ch.isupper()
            # "ABCDef": a new word starts at the last capital before lower-case letters,
            # except a plural "s" closing an acronym ("BGVs", "OHs").
            caps_plural = nxt == "s" and not after.islower()
            acronym_end = prev.isupper() and ch.isupper() and nxt.islower() and not caps_plural
            if digit_edge or lower_to_upper or acronym_end:
                tokens.append(current)
                current = ""
        current += ch
    if current:
        tokens.append(current)
    return tokens


def name_tokens(filename: str | Path) -> list[str]:
    """Lower-case tokens of a file name's stem (folder and extension dropped).

    ``"01_Kick In.wav"`` -> ``["01", "kick", "in"]``; ``"LeadVox.flac"`` -> ``["lead", "vox"]``.
    """
    stem = Path(filename).stem
    chunks: list[str] = []
    current = ""
    for ch in stem:  # split on anything that is not a letter or a digit
        if ch.isalnum():
            current += ch
        elif current:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    return [tok.lower() for chunk in chunks for tok in _split_chunk(chunk)]


def _token_matches(token: str, alias: str) -> bool:
    """``token`` is ``alias`` or its plural (a trailing ``s``)."""
    return token == alias or (token.endswith("s") and token[:-1] == alias)


def _token_role(token: str) -> str | None:
    role = TOKEN_ALIASES.get(token)
    if role is None and token.endswith("s"):
        role = TOKEN_ALIASES.get(token[:-1])
    return role


_PHRASES_LONGEST_FIRST = sorted(PHRASE_ALIASES.items(), key=lambda item: -len(item[0]))


def role_from_name(filename: str | Path) -> str | None:
    """Guess a stem's role from its file name; ``None`` when nothing matches.

    ``"01_Kick In.wav"`` -> ``"kick"``, ``"BGV 2.wav"`` -> ``"backing_vocals"``,
    ``"track07.wav"`` -> ``None`` (the caller then uses ``"other"`` and says so).
    """
    tokens = name_tokens(filename)
    for phrase, role in _PHRASES_LONGEST_FIRST:
        n = len(phrase)
        for start in range(len(tokens) - n + 1):
            if all(_token_matches(tokens[start + k], phrase[k]) for k in range(n)):
                return role
    found = {role for role in map(_token_role, tokens) if role is not None}
    for role in TOKEN_PRIORITY:
        if role in found:
            return role
    return None


_ROMAN_PARTS = {"i": 1, "ii": 2, "iii": 3, "iv": 4}
_WORD_PARTS = {"first": 1, "second": 2, "third": 3, "fourth": 4}
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")


def _part_token(token: str) -> int | None:
    if token.isdigit():
        value = int(token)
        return value if 1 <= value <= 9 else None
    return _ROMAN_PARTS.get(token)


def part_number(filename: str | Path) -> int | None:
    """The desk or part number a stem's name gives its instrument, else ``None``.

    Orchestral and band parts are numbered: ``"Violin I"``, ``"violin_2"``, ``"2nd Violin"``,
    ``"First Trumpet"``, ``"03_Vln1"``. The number counts only next to an instrument token
    (right after it, or an ordinal right before it), so a leading track number
    (``"01_Violin"``) is not a part number. Digits 1-9, Roman I-IV and first-fourth are read.
    """
    tokens = name_tokens(filename)
    for i, token in enumerate(tokens):
        if _token_role(token) is None:
            continue
        if i + 1 < len(tokens):
            after = _part_token(tokens[i + 1])
            if after is not None:
                return after
        if i >= 1 and tokens[i - 1] in _WORD_PARTS:
            return _WORD_PARTS[tokens[i - 1]]
        if i >= 2 and tokens[i - 1] in _ORDINAL_SUFFIXES and tokens[i - 2].isdigit():
            return _part_token(tokens[i - 2])
    return None


def check_role(role: object, *, where: str) -> str:
    """Return the canonical role name for ``role`` or raise :class:`InputError`.

    Case, surrounding spaces and ``-``/space for ``_`` are forgiven (``"Lead Vocal"`` ->
    ``"lead_vocal"``). ``where`` names the source of the value for the error message (e.g.
    ``"--role kick=kik"`` or ``"roles.yaml:3"``).
    """
    valid = ", ".join(ROLES)
    if not isinstance(role, str):
        raise InputError(f"role must be a name, got {role!r}", path=where,
                         hint=f"use one of: {valid}")
    canonical = role.strip().lower().replace("-", "_").replace(" ", "_")
    if canonical in ROLES:
        return canonical
    close = difflib.get_close_matches(canonical, list(ROLES), n=1, cutoff=0.6)
    suggestion = close[0] if close else role_from_name(role)
    message = f"unknown role {role!r}"
    if suggestion:
        message += f" (did you mean {suggestion!r}?)"
    raise InputError(message, path=where, hint=f"use one of: {valid}")
