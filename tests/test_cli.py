"""The CLI on the bundled demo and on bad input: exit codes, error text, outputs."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from expertmix.cli import app
from expertmix.loudness import measure_loudness_file
from expertmix.resources import data_dir

runner = CliRunner()
DEMO = data_dir("demo")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    before = {p.name: _sha(p) for p in DEMO.glob("*.flac")}
    result = runner.invoke(app, ["demo", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert {p.name: _sha(p) for p in DEMO.glob("*.flac")} == before  # the stems are never touched
    return out


def test_demo_outputs(demo_out: Path) -> None:
    for name in ("mix.wav", "master.wav", "plan.yaml", "report.md", "analysis.yaml"):
        assert (demo_out / name).is_file(), name
    stems = sorted(p.stem for p in (demo_out / "stems").glob("*.wav"))
    assert stems == sorted(p.stem for p in DEMO.glob("*.flac"))
    mix, master = sf.info(str(demo_out / "mix.wav")), sf.info(str(demo_out / "master.wav"))
    assert mix.frames == master.frames and master.subtype == "PCM_24" and master.channels == 2
    assert mix.frames >= 20.0 * 44100  # the whole 20 s song plus the reverb tail


def test_demo_master_meets_streaming_target(demo_out: Path) -> None:
    stats = measure_loudness_file(str(demo_out / "master.wav"))
    assert abs(stats.integrated_lufs - (-14.0)) <= 0.5
    assert stats.true_peak_dbtp <= -1.0 + 0.05
    from expertmix.master import gain_modulation_lu

    # glue compression moves the gain ~0.6 LU; the loud preset on this song pumps by ~6 LU
    assert gain_modulation_lu(demo_out / "mix.wav", demo_out / "master.wav") < 1.0  # no audible pumping
    report = (demo_out / "report.md").read_text()
    assert "Target met" in report and "hum found and notched" in report


def test_demo_plan_rerenders_bit_identically(demo_out: Path, tmp_path: Path) -> None:
    out2 = tmp_path / "again"
    result = runner.invoke(app, ["render", str(demo_out / "plan.yaml"), "-o", str(out2), "-q"])
    assert result.exit_code == 0, result.output
    for name in ("mix.wav", "master.wav", "stems/lead_vocal.wav"):
        assert _sha(out2 / name) == _sha(demo_out / name), name


def test_edited_plan_changes_only_that_track(demo_out: Path, tmp_path: Path) -> None:
    plan = yaml.safe_load((demo_out / "plan.yaml").read_text())
    for t in plan["tracks"]:
        if t["name"] == "keys":
            t["gain_db"] -= 6.0206
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(plan, sort_keys=False))
    out2 = tmp_path / "edited-out"
    assert runner.invoke(app, ["render", str(edited), "-o", str(out2), "-q"]).exit_code == 0
    keys_a, _ = sf.read(str(demo_out / "stems/keys.wav"))
    keys_b, _ = sf.read(str(out2 / "stems/keys.wav"))
    assert abs(keys_b).max() == pytest.approx(abs(keys_a).max() / 2, rel=1e-4)
    assert _sha(out2 / "stems/guitar.wav") == _sha(demo_out / "stems/guitar.wav")
    assert "*edited*" in (out2 / "report.md").read_text()


@pytest.mark.parametrize("args, code, text", [
    (["mix", "/nonexistent/stems", "-o", "OUT"], 2, "does not exist"),
    (["mix", str(DEMO), "-o", "OUT", "--genre", "popp"], 2, "did you mean 'pop'"),
    (["mix", str(DEMO), "-o", "OUT", "--role", "kick.flac=kik"], 2, "did you mean 'kick'"),
    (["mix", str(DEMO), "-o", "OUT", "--role", "nosuch.wav=bass"], 2, "nosuch"),
    (["mix", str(DEMO), "-o", "OUT", "--role", "kickbass"], 2, "FILE=ROLE"),
    (["mix", str(DEMO), "-o", "OUT", "--preset", "spotify"], 2, "streaming"),
    (["mix", str(DEMO), "-o", str(DEMO)], 6, "stems folder"),
    (["render", "/nonexistent/plan.yaml", "-o", "OUT"], 3, "cannot read the plan"),
    (["mix", str(DEMO), "-o", "OUT", "--target-lufs", "3"], 2, ""),
])
def test_errors_exit_codes(args: list[str], code: int, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert text in result.output
    assert not (tmp_path / "OUT").exists()  # nothing written on error


def test_existing_output_needs_overwrite(demo_out: Path, tmp_path: Path) -> None:
    target = tmp_path / "user-folder"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    result = runner.invoke(app, ["mix", str(DEMO), "-o", str(target), "--overwrite", "-q"])
    assert result.exit_code == 6 and "not written by expertmix" in result.output
    assert (target / "precious.txt").read_text() == "mine"


def test_bad_plan_names_field_and_line(demo_out: Path, tmp_path: Path) -> None:
    text = (demo_out / "plan.yaml").read_text().replace("gain_db: 1.0\n", "gain_db: 99.0\n", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    line = text.splitlines().index(next(l for l in text.splitlines() if "gain_db: 99.0" in l)) + 1
    result = runner.invoke(app, ["render", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3
    assert "tracks[lead_vocal].gain_db" in result.output and f":{line}" in result.output


@pytest.mark.parametrize("cmd", [["--help"], ["mix", "--help"], ["render", "--help"], ["plan", "--help"],
                                 ["demo", "--help"], ["genres", "list"], ["genres", "show", "rock"], ["roles"],
                                 ["presets"], ["parameters"], ["--version"]])
def test_info_commands(cmd: list[str]) -> None:
    result = runner.invoke(app, cmd)
    assert result.exit_code == 0, result.output
    assert result.output.strip()


def test_measure_json(demo_out: Path) -> None:
    result = runner.invoke(app, ["measure", str(demo_out / "master.wav"), "--json"])
    assert result.exit_code == 0 and "integrated_lufs" in result.output
