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
    assert "Target met" in report and "| guitar | hum | repaired |" in report and "| keys | dc_offset | repaired |" in report


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
    lines = (demo_out / "plan.yaml").read_text().splitlines()
    start = lines.index("- name: lead_vocal")
    idx = next(i for i in range(start, len(lines)) if lines[i].startswith("  gain_db:"))
    lines[idx] = "  gain_db: 99.0"
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n".join(lines) + "\n")
    line = idx + 1
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


# --- the rulebook, genre auto and evaluation commands -------------------------------------------

def test_demo_writes_the_rules_trace(demo_out: Path) -> None:
    trace = yaml.safe_load((demo_out / "rules-trace.yaml").read_text())
    kick = [t for t in trace if t["rule"] == "kick-box-cut" and t["target"] == "kick"]
    assert kick and kick[0]["fired"] and kick[0]["proposed"]["eq"][0]["freq_hz"] == 400.0
    silent = [t for t in trace if t["rule"] == "kick-box-cut" and t["target"] == "bass"]
    assert silent and not silent[0]["fired"] and "role bass" in silent[0]["reason"]


def test_rules_commands() -> None:
    r = runner.invoke(app, ["rules", "test"])
    assert r.exit_code == 0 and "examples pass" in r.output
    r = runner.invoke(app, ["rules", "list"])
    assert r.exit_code == 0 and "kick-box-cut" in r.output
    r = runner.invoke(app, ["rules", "show", "kick-box-cut"])
    assert r.exit_code == 0 and "lowend.yaml" in r.output and "cardboard" in r.output
    r = runner.invoke(app, ["rules", "show", "kick-box-cutt"])
    assert r.exit_code == 2 and "did you mean 'kick-box-cut'" in r.output
    r = runner.invoke(app, ["rules", "vocabulary", "--json"])
    assert r.exit_code == 0 and "crest_db" in r.output


def test_rules_check_and_test_report_a_users_bad_rule(tmp_path: Path) -> None:
    d = tmp_path / "myrules"
    d.mkdir()
    (d / "mine.yaml").write_text("rules:\n  - id: loud-vox\n    summary: x\n    when: {role: lead_vocal}\n"
                                 "    then: [{set: gain_db, value: {descriptor: loudnes_lufs}}]\n")
    r = runner.invoke(app, ["rules", "check", str(d)])
    assert r.exit_code == 3
    assert "mine.yaml:5" in r.output and "loud-vox" in r.output and "did you mean 'loudness_lufs'" in r.output
    (d / "mine.yaml").write_text("rules:\n  - id: loud-vox\n    summary: x\n    rationale: y\n    when: {role: lead_vocal}\n"
                                 "    then: [{add: gain_db, value: 2}]\n"
                                 "    examples:\n      - {expect: fire, session: {stems: {v: {role: guitar}}}}\n"
                                 "      - {expect: silent, session: {stems: {v: {role: guitar}}}}\n")
    r = runner.invoke(app, ["rules", "test", str(d)])
    assert r.exit_code == 3 and "FAIL" in r.output and "loud-vox" in r.output and "stayed silent" in r.output


def test_user_rules_change_the_mix(tmp_path: Path) -> None:
    d = tmp_path / "myrules"
    d.mkdir()
    (d / "mine.yaml").write_text("rules:\n  - id: vocal-way-up\n    summary: the lead 4 dB up\n    rationale: taste\n"
                                 "    priority: 90\n    when: {role: lead_vocal}\n    then: [{add: gain_db, value: 4}]\n")
    plan = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", str(DEMO), "-o", str(plan), "--rules", str(d), "-q"])
    assert r.exit_code == 0, r.output
    p = yaml.safe_load(plan.read_text())
    vox = next(t for t in p["tracks"] if t["name"] == "lead_vocal")
    assert "vocal-way-up" in vox["why"]["gain_db"]["source"]


def test_rules_explain_on_the_demo() -> None:
    r = runner.invoke(app, ["rules", "explain", str(DEMO), "hum-notch", "-q"])
    assert r.exit_code == 0, r.output
    assert "fired" in r.output and "guitar" in r.output and "silent" in r.output


def test_genre_auto_records_its_guess(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", str(DEMO), "-o", str(plan), "--genre", "auto", "-q"])
    assert r.exit_code == 0, r.output
    p = yaml.safe_load(plan.read_text())
    assert p["why"]["genre"]["source"] == "auto:genre"
    assert p["genre"] in ("pop", "rock") and any("genre guessed from the stems" in n for n in p["notes"])


def test_evaluate_against_the_demo_reference(demo_out: Path) -> None:
    ref = DEMO / "reference" / "reference_mix.flac"
    r = runner.invoke(app, ["evaluate", str(DEMO), str(demo_out), "--reference", str(ref),
                            "--reference-gains", str(DEMO / "meta.json"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    d = json.loads(r.output)
    assert d["balance_error_lu"] < d["baseline_balance_error_lu"]["plain_sum"]


def test_analyse_writes_every_descriptor_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from expertmix.descriptor_specs import DESCRIPTOR_NAMES

    out = tmp_path / "descriptors.yaml"
    r = runner.invoke(app, ["analyse", str(DEMO), "-o", str(out), "-q", "--processes", "1"])
    assert r.exit_code == 0, r.output
    d = yaml.safe_load(out.read_text())
    assert d["descriptor_version"] >= 1 and 60 < d["tempo_bpm"] < 200
    assert set(d["stems"]) == {p.stem for p in DEMO.glob("*.flac")}
    assert set(DESCRIPTOR_NAMES) <= set(d["stems"]["kick"])
    assert any(m["maskee"] == "lead_vocal" for m in d["masking"])
    r = runner.invoke(app, ["analyse", str(DEMO), "-o", str(out), "-q"])
    assert r.exit_code == 6 and "already exists" in r.output


def test_roles_from_the_audio_when_names_say_nothing_and_the_user_wins(tmp_path: Path) -> None:
    """Wiring test (the demo is in the classifier's training data; accuracy is in models/roles/README.md)."""
    import shutil

    anon = tmp_path / "anon"
    anon.mkdir()
    for name in ("kick", "bass", "lead_vocal"):
        shutil.copy(DEMO / f"{name}.flac", anon / f"track_{name[0]}.flac")
    plan = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", str(anon), "-o", str(plan), "-q", "--role", "track_b.flac=synth"])
    assert r.exit_code == 0, r.output
    p = yaml.safe_load(plan.read_text())
    roles = {t["name"]: t["role"] for t in p["tracks"]}
    assert roles == {"track_k": "kick", "track_b": "synth", "track_l": "lead_vocal"}
    assert any("track_k: role kick recognised from the audio" in n for n in p["notes"])
    assert not any(n.startswith("track_b: role") for n in p["notes"])


def test_planning_is_deterministic_end_to_end(demo_out: Path, tmp_path: Path) -> None:
    """Same stems, same version: the same plan (descriptors in worker processes, rules, learned
    refinements) as the demo run, byte for byte."""
    plan = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["plan", str(DEMO), "-o", str(plan), "-q"])
    assert r.exit_code == 0, r.output
    strip = lambda text: "\n".join(l for l in text.splitlines() if "stems_dir" not in l)  # noqa: E731
    assert strip(plan.read_text()) == strip((demo_out / "plan.yaml").read_text())


def test_report_lists_learned_refinements_within_bounds(demo_out: Path) -> None:
    report = (demo_out / "report.md").read_text()
    assert "## Learned refinements" in report
    plan = yaml.safe_load((demo_out / "plan.yaml").read_text())
    moved = [(t["name"], d) for t in plan["tracks"] for d in t["why"].values() if d.get("model_delta") is not None]
    assert moved
    for name, d in moved:
        lo, hi = d["bounds"]
        assert lo - 1e-9 <= d["value"] <= hi + 1e-9, name
        assert abs(d["rule_value"] + d["model_delta"] - d["value"]) < 0.01, name


def test_the_console_script_starts_its_workers_early_and_mixes_the_same(demo_out: Path, tmp_path: Path) -> None:
    """`expertmix` (expertmix.__main__) starts the worker pool before importing the CLI; the mix
    is the one the CLI makes in-process, bit for bit, and usage errors keep their exit code."""
    import subprocess
    import sys

    out = tmp_path / "console"
    done = subprocess.run([sys.executable, "-m", "expertmix", "mix", str(DEMO), "-o", str(out), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("mix.wav", "master.wav"):
        assert _sha(out / name) == _sha(demo_out / name)
    bad = subprocess.run([sys.executable, "-m", "expertmix", "mix", str(tmp_path / "nope"), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr
