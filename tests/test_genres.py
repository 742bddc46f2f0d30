"""Every bundled genre profile loads; inheritance and load-time errors behave."""
from __future__ import annotations

from pathlib import Path

import pytest

from expertmix.defaults import master_for
from expertmix.errors import InputError, RulebookError
from expertmix.genres import available_genres, load_genre

BUNDLED = sorted(n for n in available_genres() if n != "base")


def test_at_least_the_issue_genres() -> None:
    assert {"pop", "rock", "metal", "hip-hop", "rnb", "electronic", "jazz", "acoustic", "orchestral", "reggae"} <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_genre_loads_and_gives_a_master(name: str) -> None:
    g = load_genre(name)
    assert g.name == name and g.description
    m = master_for(g)
    assert -36 <= m.target_lufs <= -5 and m.limiter.ceiling_dbtp <= -1.0


def test_inheritance_merges_nested_keys() -> None:
    metal, rock, base = load_genre("metal"), load_genre("rock"), load_genre("base")
    assert metal.master.target_lufs == -10.0            # set by metal
    assert metal.drums_offset_db == rock.drums_offset_db  # inherited from rock
    assert metal.master.glue_ratio == base.master.glue_ratio  # nested key from base


@pytest.mark.parametrize("alias, name", [("hiphop", "hip-hop"), ("EDM", "electronic"), ("classical", "orchestral"),
                                         ("R&B", "rnb"), ("Hip Hop", "hip-hop")])
def test_aliases(alias: str, name: str) -> None:
    assert load_genre(alias).name == name


def test_unknown_genre_suggests() -> None:
    with pytest.raises(InputError, match="did you mean 'rock'"):
        load_genre("rokc")


@pytest.mark.parametrize("text, field, line", [
    ("name: mine\ninherits: base\nlead_vocal_offset_db: 40\n", "lead_vocal_offset_db", 3),
    ("name: mine\ninherits: base\nreverb:\n  decay_s: 1.0\n  dekay: 2\n", "reverb.dekay", 5),
])
def test_bad_user_genre_names_file_line_field(tmp_path: Path, text: str, field: str, line: int) -> None:
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(RulebookError) as exc:
        load_genre("mine", tmp_path)
    assert exc.value.field == field and exc.value.line == line and str(tmp_path / "mine.yaml") in str(exc.value)


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("name: mine\ninherits: base\ndescription: a: b\n")
    with pytest.raises(RulebookError) as exc:
        load_genre("mine", tmp_path)
    assert exc.value.line == 3


def test_user_folder_overrides_bundled(tmp_path: Path) -> None:
    (tmp_path / "pop.yaml").write_text("name: pop\ninherits: base\nlead_vocal_offset_db: 3.5\n")
    assert load_genre("pop", tmp_path).lead_vocal_offset_db == 3.5
