"""`expertmix learn ...`: exit codes and messages of add, feedback, train, inspect, list, remove."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from expertmix import learning as L
from expertmix.cli_learn import learn_app
from expertmix.store import TrainingStore

from test_learning import feedback_song, lead_up, write_session

app = typer.Typer()
app.add_typer(learn_app, name="learn")


@app.callback()
def _root() -> None:
    """test root"""


runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["learn", *args])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    _, mix = write_session(d / "stems")
    sf.write(d / "mix.wav", mix.astype(np.float32), 22050, subtype="FLOAT")
    sf.write(d / "long.wav", np.concatenate([mix, mix, mix]).astype(np.float32), 22050, subtype="FLOAT")
    return d


def test_add_reports_the_fit_and_list_and_remove_work(session, tmp_path):
    store = str(tmp_path / "s.sqlite")
    r = run("add", str(session / "stems"), str(session / "mix.wav"), "--store", store, "--augment", "1",
            "--genre", "rock", "--licence", "CC0")
    assert r.exit_code == 0, r.output
    assert "residual of -" in r.output and "stored song 1" in r.output and "lead_vocal" in r.output
    r = run("list", "--store", store)
    assert r.exit_code == 0 and "1 augmented copies" in r.output and "2 songs" in r.output
    r = run("add", str(session / "stems"), str(session / "mix.wav"), "--store", store, "--augment", "0")
    assert r.exit_code == 2 and "already in the training store" in r.output and "--replace" in r.output
    r = run("remove", "1", "--store", store)
    assert r.exit_code == 0 and "2 entries" in r.output
    r = run("remove", "1", "--store", store)
    assert r.exit_code == 2 and "there is no song 1" in r.output


def test_add_refuses_a_pair_that_does_not_match(session, tmp_path):
    r = run("add", str(session / "stems"), str(session / "long.wav"), "--store", str(tmp_path / "s.sqlite"),
            "--augment", "0")
    assert r.exit_code == 2
    assert "do not have the same length" in r.output and "fix:" in r.output
    with TrainingStore(tmp_path / "s.sqlite") as st:
        assert st.list_songs() == []


def test_feedback_train_and_inspect(session, tmp_path):
    from expertmix.pipeline import run_plan

    store = str(tmp_path / "s.sqlite")
    with TrainingStore(store) as st:  # three earlier songs where the engineer raised the lead
        for seed in range(3):
            feedback_song(st, seed, lead_up)
    plan = run_plan(session / "stems", tmp_path / "plan.yaml", genre="rock")
    edited = plan.model_copy(deep=True)
    lead_up(edited.track("lead_vocal"))
    from expertmix.plan import dump_plan

    dump_plan(edited, tmp_path / "edited.yaml")
    r = run("feedback", str(tmp_path / "plan.yaml"), str(tmp_path / "edited.yaml"), "--store", store)
    assert r.exit_code == 0, r.output
    assert "lead_vocal.gain_db" in r.output and "(+2)" in r.output and "1 edited value" in r.output
    r = run("feedback", str(tmp_path / "plan.yaml"), str(tmp_path / "edited.yaml"), "--store", store)
    assert r.exit_code == 2 and "already in the training store" in r.output

    models = tmp_path / "models"
    r = run("train", "--store", store, "-o", str(models))
    assert r.exit_code == 0, r.output
    assert "refine.gain_db" in r.output and "CV by song (4 songs)" in r.output
    assert (models / "manifest.json").is_file() and not list(models.glob("*.pkl"))
    r = run("inspect", str(models))
    assert r.exit_code == 0, r.output
    for text in ("refine.gain_db", "top features", "CV by song", "data licence", "lightgbm"):
        assert text in r.output
    r = run("inspect", str(models), "--json")
    info = json.loads(r.output)
    assert info["models"]["gain_db"]["card"]["feature_names"] == L.feature_names()


def test_train_without_data_and_inspect_of_a_broken_folder(tmp_path):
    r = run("train", "--store", str(tmp_path / "empty.sqlite"), "-o", str(tmp_path / "m"))
    assert r.exit_code == 2 and "not enough training data" in r.output and "learn add" in r.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    r = run("inspect", str(tmp_path / "broken"))
    assert r.exit_code == 4 and "not valid JSON" in r.output and "fix:" in r.output


def test_train_warns_about_songs_described_by_another_analysis_version(tmp_path):
    import sqlite3

    from expertmix.descriptor_specs import DESCRIPTOR_VERSION

    store = str(tmp_path / "s.sqlite")
    with TrainingStore(store) as st:
        for seed in range(5):
            feedback_song(st, seed, lead_up)

    def age(count: int) -> None:  # the first songs were added by an older expertmix
        with sqlite3.connect(store) as db:
            db.execute("UPDATE stems SET descriptor_version = ? WHERE song_id IN "
                       "(SELECT id FROM songs ORDER BY id LIMIT ?)", (DESCRIPTOR_VERSION - 1, count))
    age(1)
    r = run("train", "--store", store, "-o", str(tmp_path / "m"), "--quiet")
    assert r.exit_code == 0, r.output
    assert "1 song(s) in the store were described by another analysis version" in r.output
    assert "learn add" in r.output
    age(2)  # now too little is left: the error says why
    r = run("train", "--store", store, "-o", str(tmp_path / "m2"))
    assert r.exit_code == 2 and "not enough training data" in r.output
    assert "2 song(s) in the store were described by another analysis version" in r.output
