"""expertmix.roles: the vocabulary, families and role detection from file names."""
from __future__ import annotations

import pytest

from expertmix.errors import InputError
from expertmix.roles import (PHRASE_ALIASES, ROLE_FAMILY, ROLES, TOKEN_ALIASES, check_role, name_tokens,
                             part_number, role_from_name)


@pytest.mark.parametrize("filename, role", [
    # the names from the brief
    ("01_Kick In.wav", "kick"),
    ("LeadVox.flac", "lead_vocal"),
    ("vocals_female.flac", "lead_vocal"),
    ("vocals_male.flac", "lead_vocal"),
    ("guitar_distorted_1.flac", "guitar"),
    ("synth_arp.flac", "synth"),
    ("fx_vinyl.flac", "fx"),
    ("clap.wav", "percussion"),
    ("BGV 2.wav", "backing_vocals"),
    ("OH L.wav", "overheads"),
    ("hihat.wav", "hats"),
    ("808.wav", "bass"),
    ("Rhodes.wav", "keys"),
    ("violin_1.flac", "strings"),
    ("cello.flac", "strings"),
    ("sax.wav", "winds"),
    ("shaker.wav", "percussion"),
    ("room.wav", "overheads"),
    # more spellings
    ("Snare Top.wav", "snare"),
    ("SN_bottom.aif", "snare"),
    ("HiHat.wav", "hats"),
    ("Tom1.wav", "toms"),
    ("Floor Tom.wav", "toms"),
    ("Drums.wav", "drums"),
    ("drum_loop_120bpm.wav", "drums"),
    ("Bass DI.wav", "bass"),
    ("Ac Gtr.wav", "guitar"),
    ("Piano L.wav", "keys"),
    ("B3 Organ.wav", "keys"),
    ("String Section.wav", "strings"),
    ("Trumpets.wav", "brass"),
    ("Flute.mp3", "winds"),
    ("Tambourine.wav", "percussion"),
    ("Riser.ogg", "fx"),
    ("Warm Pad.wav", "pad"),
    ("BGVs.wav", "backing_vocals"),
    ("bv3.wav", "backing_vocals"),
    ("Harmony High.wav", "backing_vocals"),
    ("Choir.wav", "backing_vocals"),
    ("Vox.wav", "lead_vocal"),
    ("voice memo.wav", "lead_vocal"),
    # multi-word hints beat single tokens
    ("Backing Vocals.wav", "backing_vocals"),
    ("Lead Vocal.wav", "lead_vocal"),
    ("Bass Drum.wav", "kick"),
    ("Bass Guitar.wav", "bass"),
    ("Synth Bass.wav", "bass"),
    ("Upright Piano.wav", "keys"),
    ("Bass Clarinet.wav", "winds"),
    # specific single tokens beat generic ones
    ("Drum Overheads.wav", "overheads"),
    ("Kick Sub 808.wav", "kick"),
    ("SynthPad.wav", "pad"),
    ("Vox FX.wav", "lead_vocal"),
    # nothing to go on
    ("track07.wav", None),
    ("Audio 1.wav", None),
    ("untitled.flac", None),
])
def test_role_from_name(filename, role):
    assert role_from_name(filename) == role


@pytest.mark.parametrize("filename, tokens", [
    ("01_Kick In.wav", ["01", "kick", "in"]),
    ("LeadVox.flac", ["lead", "vox"]),
    ("track07.wav", ["track", "07"]),
    ("BGVs.wav", ["bgvs"]),
    ("ABCDef-x y.wav", ["abc", "def", "x", "y"]),
    ("/some/folder/OH L.wav", ["oh", "l"]),
])
def test_name_tokens(filename, tokens):
    assert name_tokens(filename) == tokens


def test_vocabulary_is_consistent():
    assert list(ROLES)[:2] == ["lead_vocal", "backing_vocals"] and "other" in ROLES
    assert all(isinstance(doc, str) and doc for doc in ROLES.values())
    assert set(ROLE_FAMILY) == set(ROLES)
    assert set(ROLE_FAMILY.values()) == {"drums", "vocals", "music"}
    assert {r for r, f in ROLE_FAMILY.items() if f == "drums"} == {
        "kick", "snare", "hats", "toms", "overheads", "drums", "percussion"}
    assert {r for r, f in ROLE_FAMILY.items() if f == "vocals"} == {"lead_vocal", "backing_vocals"}
    assert ROLE_FAMILY["fx"] == "music"
    assert set(TOKEN_ALIASES.values()) | set(PHRASE_ALIASES.values()) <= set(ROLES)
    assert all(len(phrase) >= 2 for phrase in PHRASE_ALIASES)


@pytest.mark.parametrize("given, canonical", [
    ("kick", "kick"), ("Lead Vocal", "lead_vocal"), (" backing-vocals ", "backing_vocals"), ("FX", "fx"),
])
def test_check_role_accepts_and_normalises(given, canonical):
    assert check_role(given, where="--role x") == canonical


@pytest.mark.parametrize("given, suggestion", [
    ("kik", "kick"), ("snair", "snare"), ("lead_vocals", "lead_vocal"), ("vox", "lead_vocal"),
    ("guitars", "guitar"),
])
def test_check_role_suggests(given, suggestion):
    with pytest.raises(InputError) as err:
        check_role(given, where="--role track07=" + given)
    text = str(err.value)
    assert f"unknown role {given!r}" in text
    assert f"did you mean {suggestion!r}" in text
    assert text.startswith("--role track07=")
    assert "lead_vocal, backing_vocals, kick" in err.value.hint  # the valid roles are listed


def test_check_role_without_suggestion_and_non_string():
    with pytest.raises(InputError) as err:
        check_role("zzzzqqq", where="roles.yaml:2")
    assert "did you mean" not in str(err.value) and "other" in err.value.hint
    with pytest.raises(InputError, match="role must be a name"):
        check_role(5, where="roles.yaml:3")


@pytest.mark.parametrize("filename, part", [
    ("violin_1.flac", 1), ("violin_2.flac", 2), ("Violin I.wav", 1), ("Violin II.wav", 2),
    ("2nd Violin.wav", 2), ("First Trumpet.aif", 1), ("03_Vln1.wav", 1), ("Violins 2.wav", 2),
    ("Horn III.wav", 3),
    # no part number: none given, a leading track number, a number too large, no instrument
    ("viola.flac", None), ("01_Violin.wav", None), ("trumpet 12.wav", None), ("take_2.wav", None),
])
def test_part_number(filename, part):
    assert part_number(filename) == part
