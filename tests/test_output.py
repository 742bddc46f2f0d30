"""Safe output: staged, atomic output folders; the stems are never written; re-rendering a
written plan reproduces the same files byte for byte."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from signals import kick_pattern

from expertmix.errors import OutputError
from expertmix.io import OUTPUT_MARKER, check_output_dir, staged_output
from expertmix.pipeline import run_mix, run_render

SR = 44100


def tree_hashes(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden files included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path, name: str) -> list[str]:
    """Staging or backup folders ``staged_output`` may have left next to ``name``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def make_previous_output(out: Path) -> dict[str, str]:
    with staged_output(out, overwrite=False) as stage:
        (stage / "mix.wav").write_bytes(b"old mix")
        (stage / "stems").mkdir()
        (stage / "stems" / "a.wav").write_bytes(b"old stem")
    assert (out / OUTPUT_MARKER).is_file()
    return tree_hashes(out)


def synth_session(folder: Path, seconds: float = 2.0) -> Path:
    """Three stems of different formats: mono PCM_24 kick, mono PCM_16 bass, stereo float guitar."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kick = kick_pattern(seconds, SR)
    bass = 0.4 * np.sin(2 * np.pi * 55 * t)
    guitar = 0.2 * rng.standard_normal((n, 2)) * np.exp(-(t % 0.5) / 0.2)[:, None]
    folder.mkdir(parents=True)
    sf.write(str(folder / "kick.wav"), kick, SR, subtype="PCM_24")
    sf.write(str(folder / "bass.wav"), bass, SR, subtype="PCM_16")
    sf.write(str(folder / "guitar.wav"), guitar, SR, subtype="FLOAT")
    return folder


# -- staged_output ---------------------------------------------------------------------------

def test_successful_stage_becomes_the_output(tmp_path):
    out = tmp_path / "out"
    make_previous_output(out)
    assert (out / "mix.wav").read_bytes() == b"old mix"
    assert leftovers(tmp_path, "out") == []


def test_exception_leaves_a_new_output_uncreated(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out, overwrite=False) as stage:
            (stage / "mix.wav").write_bytes(b"half")
            raise RuntimeError("render crashed")
    assert not out.exists()
    assert leftovers(tmp_path, "out") == []


def test_exception_leaves_an_existing_output_untouched(tmp_path):
    out = tmp_path / "out"
    before = make_previous_output(out)
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, overwrite=True) as stage:
            (stage / "mix.wav").write_bytes(b"new mix, never finished")
            raise KeyboardInterrupt
    assert tree_hashes(out) == before
    assert leftovers(tmp_path, "out") == []


def test_overwrite_replaces_an_earlier_expertmix_output(tmp_path):
    out = tmp_path / "out"
    make_previous_output(out)
    with staged_output(out, overwrite=True) as stage:
        (stage / "mix.wav").write_bytes(b"new mix")
    assert (out / "mix.wav").read_bytes() == b"new mix"
    assert not (out / "stems").exists()              # nothing of the old output survives
    assert (out / OUTPUT_MARKER).is_file()
    assert leftovers(tmp_path, "out") == []


def test_existing_output_without_overwrite_is_refused(tmp_path):
    out = tmp_path / "out"
    before = make_previous_output(out)
    with pytest.raises(OutputError) as info:
        with staged_output(out, overwrite=False):
            pytest.fail("the body must not run")
    assert "--overwrite" in str(info.value)
    assert tree_hashes(out) == before
    assert info.value.exit_code == 6


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_folder_is_never_replaced(tmp_path, overwrite):
    out = tmp_path / "my-music"
    out.mkdir()
    (out / "song.wav").write_bytes(b"precious")
    (out / "notes.txt").write_text("keep me")
    before = tree_hashes(out)
    with pytest.raises(OutputError):
        with staged_output(out, overwrite=overwrite):
            pytest.fail("the body must not run")
    assert tree_hashes(out) == before
    assert leftovers(tmp_path, "my-music") == []


def test_empty_existing_folder_is_accepted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with staged_output(out, overwrite=False) as stage:
        (stage / "x").write_text("x")
    assert (out / "x").read_text() == "x"


def test_file_in_the_way_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(OutputError):
        check_output_dir(out, overwrite=True)
    assert out.read_text() == "a file"


def test_missing_parent_is_refused(tmp_path):
    with pytest.raises(OutputError):
        check_output_dir(tmp_path / "no" / "such" / "out", overwrite=False)


@pytest.mark.parametrize("which", ["stems", "parent", "grandparent"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_may_not_be_or_contain_the_stems(tmp_path, which, overwrite):
    stems = synth_session(tmp_path / "project" / "stems")
    (tmp_path / "project" / OUTPUT_MARKER).write_text("")     # even a folder that looks like an output
    before = tree_hashes(tmp_path)
    out = {"stems": stems, "parent": stems.parent, "grandparent": tmp_path}[which]
    with pytest.raises(OutputError) as info:
        with staged_output(out, overwrite=overwrite, protected=(stems,)):
            pytest.fail("the body must not run")
    assert "stems" in str(info.value)
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("which", ["stems", "parent"])
def test_run_mix_refuses_an_output_over_the_stems(tmp_path, which):
    stems = synth_session(tmp_path / "project" / "stems")
    before = tree_hashes(tmp_path)
    out = stems if which == "stems" else stems.parent
    with pytest.raises(OutputError):
        run_mix(stems, out, overwrite=True)
    assert tree_hashes(tmp_path) == before


# -- a whole run -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    stems = synth_session(root / "stems")
    before = tree_hashes(stems)
    result = run_mix(stems, root / "out")
    return root, stems, before, result


def test_run_mix_never_writes_the_stems(mixed):
    root, stems, before, _ = mixed
    assert tree_hashes(stems) == before
    assert sorted(p.name for p in stems.iterdir()) == ["bass.wav", "guitar.wav", "kick.wav"]


def test_run_mix_writes_a_complete_output(mixed):
    root, _, _, result = mixed
    out = root / "out"
    assert result.out_dir == out.resolve()
    for rel in ("mix.wav", "master.wav", "plan.yaml", "report.md", OUTPUT_MARKER,
                "stems/kick.wav", "stems/bass.wav", "stems/guitar.wav"):
        assert (out / rel).is_file(), rel
    mix, master = sf.info(str(out / "mix.wav")), sf.info(str(out / "master.wav"))
    assert mix.frames == master.frames                     # the master is as long as the mix
    assert (mix.samplerate, master.subtype) == (SR, "PCM_24")
    assert leftovers(root, "out") == []
    assert not list(out.glob(".master-pass-*"))            # the master's other candidates are gone


def test_run_render_of_the_written_plan_reproduces_the_files(mixed, tmp_path):
    root, stems, before, _ = mixed
    again = run_render(root / "out" / "plan.yaml", tmp_path / "again")
    first, second = tree_hashes(root / "out"), tree_hashes(tmp_path / "again")
    for rel in ("mix.wav", "master.wav", "stems/kick.wav", "stems/guitar.wav"):
        assert first[rel] == second[rel], rel
    assert (tmp_path / "again" / "plan.yaml").read_text() == (root / "out" / "plan.yaml").read_text()
    assert again.master.master == pytest.approx(run_mix_master(root))
    assert tree_hashes(stems) == before


def run_mix_master(root: Path) -> dict[str, float]:
    from expertmix.loudness import measure_loudness_file

    return measure_loudness_file(str(root / "out" / "master.wav")).to_dict()


def test_run_render_into_an_existing_output_needs_overwrite(mixed, tmp_path):
    root, stems, before, _ = mixed
    out = tmp_path / "again"
    run_render(root / "out" / "plan.yaml", out)
    first = tree_hashes(out)
    with pytest.raises(OutputError):
        run_render(root / "out" / "plan.yaml", out)
    assert tree_hashes(out) == first
    run_render(root / "out" / "plan.yaml", out, overwrite=True)
    assert tree_hashes(out)["mix.wav"] == first["mix.wav"]
    assert tree_hashes(stems) == before
