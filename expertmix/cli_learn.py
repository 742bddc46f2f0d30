"""``expertmix learn``: build a training store from past mixes and plan edits, train, inspect.

A Typer sub-app (:data:`learn_app`), registered by :mod:`expertmix.cli` as ``learn``. Errors
follow the main CLI: a message with its fix on stderr and the family's exit code (2 bad input,
4 model problem). The store is ``--store PATH``, else ``$EXPERTMIX_STORE``, else
``$XDG_DATA_HOME/expertmix/store.sqlite``; models default to ``$XDG_DATA_HOME/expertmix/models``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape

learn_app = typer.Typer(help="Learn from your mixes and edits: add songs, train the refinement models, inspect them.",
                        no_args_is_help=True)


def _cli():  # the main CLI's helpers, imported late (cli.py imports this module)
    from . import cli

    return cli


from .learning import default_models_dir  # noqa: E402  (where `learn train` writes by default)


STORE = typer.Option(None, "--store", help="training store file (default: $EXPERTMIX_STORE or the user data folder)")
JSON = typer.Option(False, "--json", help="print JSON on stdout")
QUIET = typer.Option(False, "--quiet", "-q", help="print nothing but errors")


def _print_json(obj: Any) -> None:
    _cli().out.print_json(json.dumps(obj, default=str))


def _p(text: str) -> None:
    _cli().err.print(escape(text), highlight=False, soft_wrap=True)


def _n(v: Any, fmt: str = "+.1f") -> str:
    return "–" if v is None else format(float(v), fmt)


@learn_app.command("add")
def add(stems_dir: Path = typer.Argument(..., help="folder of the song's raw stems"),
        mix_file: Path = typer.Argument(..., help="the final mix made from those stems (stereo audio file)"),
        genre: str = typer.Option("pop", "--genre", "-g", help="genre of the song (see `expertmix genres list`)"),
        store: Optional[Path] = STORE,
        licence: Optional[str] = typer.Option(None, "--licence", help="licence of the song's audio (recorded on model cards)"),
        name: Optional[str] = typer.Option(None, "--name", help="name of the song in the store (default: the folder name)"),
        augment: int = typer.Option(8, "--augment", min=0, max=100,
                                    help="perturbed copies (random gain and EQ tilt) stored for training"),
        role: list[str] = typer.Option([], "--role", "-r", help="set a stem's role: FILE=ROLE (repeatable)"),
        roles: Optional[Path] = typer.Option(None, "--roles", exists=True, dir_okay=False, help="YAML roles file"),
        exclude: list[str] = typer.Option([], "--exclude", help="leave out stems matching a name or glob"),
        replace: bool = typer.Option(False, "--replace", help="replace the song if it is already stored"),
        rules: Optional[Path] = typer.Option(None, "--rules", exists=True, help="your own rules folder"),
        quiet: bool = QUIET, json_out: bool = JSON) -> None:
    """Store a past project: estimate the engineer's decisions from its raw stems and final mix."""
    from .learning import add_reference

    cli = _cli()
    with cli._errors(), cli._progress(quiet or json_out) as progress:
        r = add_reference(stems_dir, mix_file, store=store, genre=genre, licence=licence, name=name, augment=augment,
                          role_overrides=cli._roles(role), roles_file=roles, exclude=exclude, rules_dir=rules,
                          on_duplicate="replace" if replace else "error", progress=progress)
    if json_out:
        _print_json(r.to_dict())
        return
    if quiet:
        return
    explained = 100.0 * (1.0 - 10.0 ** (r.residual_db / 10.0)) if r.residual_db is not None else float("nan")
    _p(f"fit: the estimated decisions reproduce the mix with a residual of {r.residual_db:.1f} dB "
       f"({explained:.1f} % of its energy explained); mix offset {r.offset_ms:+.1f} ms")
    _p(f"{'stem':<18} {'role':<15} {'gain dB':>8} {'in mix LU':>9} {'pan':>6} {'rule dB':>8} {'residual':>8}")
    for row in r.table:
        _p(f"{row['stem']:<18} {row['role']:<15} {_n(row['gain_db'])!s:>8} {_n(row['relative_lu'])!s:>9} "
           f"{_n(row['pan'], '+.2f')!s:>6} {_n(row['rule_gain_db'])!s:>8} {_n(row['residual_db'])!s:>8}")
    for w in r.warnings:
        _p(f"  warning: {w}")
    _p(f"stored song {r.song_id} ({r.name!r}): {r.stems} stems, {r.targets} targets, {r.augmented} augmented copies "
       f"({r.seconds:.0f} s); 'residual' = engineer's balance minus the rules' (LU, song mean removed)")


@learn_app.command("feedback")
def feedback(original_plan: Path = typer.Argument(..., exists=True, dir_okay=False, help="the plan expertmix suggested"),
             edited_plan: Path = typer.Argument(..., exists=True, dir_okay=False, help="your edit of that plan"),
             store: Optional[Path] = STORE,
             stems: Optional[Path] = typer.Option(None, "--stems", exists=True, file_okay=False,
                                                  help="the stems folder, if it moved since the plan was written"),
             name: Optional[str] = typer.Option(None, "--name", help="name of the entry in the store"),
             replace: bool = typer.Option(False, "--replace", help="replace this pair if it is already stored"),
             quiet: bool = QUIET, json_out: bool = JSON) -> None:
    """Store your edits of a suggested plan as training targets (the models move toward your taste)."""
    from .learning import add_feedback

    cli = _cli()
    with cli._errors(), cli._progress(quiet or json_out) as progress:
        r = add_feedback(original_plan, edited_plan, store=store, stems_dir=stems, name=name,
                         on_duplicate="replace" if replace else "error", progress=progress)
    if json_out:
        _print_json(r.to_dict())
        return
    if quiet:
        return
    for e in r.table:
        _p(f"  {e['stem']}.{e['slot']}: {e['suggested']:g} -> {e['edited']:g} ({e['change']:+g})")
    for w in r.warnings:
        _p(f"  note: {w}")
    _p(f"stored feedback {r.song_id} ({r.name!r}): {len(r.table)} edited value(s), {r.targets} targets; "
       "run `expertmix learn train` to update the models")


@learn_app.command("train")
def train_cmd(store: Optional[Path] = STORE,
              out_dir: Optional[Path] = typer.Option(None, "--out", "-o",
                                                     help="models folder to write (default: the user data folder)"),
              slot: list[str] = typer.Option([], "--slot", help="only these slots (repeatable), e.g. gain_db"),
              folds: Optional[int] = typer.Option(None, "--folds", min=2, help="cross-validation folds (default: one per song)"),
              seed: int = typer.Option(0, "--seed", help="random seed (training is deterministic)"),
              licence: Optional[str] = typer.Option(None, "--licence", help="licence of the training data (cards)"),
              note: Optional[str] = typer.Option(None, "--note", help="where the data came from (cards)"),
              no_cv: bool = typer.Option(False, "--no-cv", help="skip cross-validation"),
              keep_all: bool = typer.Option(False, "--keep-all",
                                            help="also keep models that do not beat the rules alone in cross-validation"),
              rules: Optional[Path] = typer.Option(None, "--rules", exists=True, help="your own rules folder"),
              quiet: bool = QUIET, json_out: bool = JSON) -> None:
    """Train the refinement models from the store, cross-validated by song against the rules alone."""
    from .learning import stale_songs_message, train

    cli = _cli()
    out = out_dir or default_models_dir()
    with cli._errors(), cli._progress(quiet or json_out) as progress:
        rep = train(store, out, slots=slot or None, n_folds=folds, seed=seed, licence=licence, data_note=note,
                    cv=not no_cv, rules_dir=rules, require_improvement=not keep_all, progress=progress)
    stale = stale_songs_message(rep.summary)
    if stale and not json_out:  # a warning even with --quiet: the models learned less than the store holds
        _p(f"warning: {stale}")
    if json_out:
        _print_json(rep.to_dict())
        return
    if quiet:
        return
    for s in rep.slots:
        if s.model is None:
            _p(f"{s.slot:<24} no model: {s.skipped}")
            continue
        rows = ", ".join(f"{k} {v}" for k, v in sorted(s.rows.items()))
        line = f"{s.slot:<24} {s.model}: {rows}"
        if s.config:
            line += f"; model {s.config}" + (" (chosen by the CV)" if s.cv else "")
        if s.cv:
            line += (f"; CV by song ({s.cv['n_songs']} songs): error {s.cv['mae']:.2f} vs rules alone "
                     f"{s.cv['baseline_mae']:.2f} ({100 * s.cv['improvement']:+.0f} %)")
            if "balance_error_model_lu" in s.cv:
                line += (f"; balance error {s.cv['balance_error_model_lu']:.2f} vs "
                         f"{s.cv['balance_error_rules_lu']:.2f} LU")
            for k, v in s.contributions.items():
                line += f"; {k.replace('_', ' ')}: {v['mae']:.2f}"
        else:
            line += "; not cross-validated (fewer than 2 songs)"
        _p(line)
    _p(f"wrote {rep.out_dir} in {rep.train_seconds:.1f} s (data licence: {rep.licence}); "
       f"use it with `expertmix mix STEMS -o OUT --models {rep.out_dir}`")


@learn_app.command("inspect")
def inspect_cmd(models_dir: Optional[Path] = typer.Argument(None, help="a models folder (default: the bundled models)"),
                json_out: bool = JSON) -> None:
    """Show the models' cards: target, features, training data and licence, metrics, top features."""
    from .learning import bundled_models_dir, inspect

    cli = _cli()
    with cli._errors():
        info = inspect(models_dir or bundled_models_dir())
    if json_out:
        _print_json(info)
        return
    man = info["manifest"]
    o = cli.out
    o.print(f"[bold]{escape(info['directory'])}[/]  feature set v{man['feature_set_version']}, descriptors "
            f"v{man['descriptor_version']}, {len(man['feature_names'])} features", highlight=False)
    o.print(f"data licence: {escape(str(man.get('licence')))}", highlight=False)
    if man.get("data_note"):
        o.print(f"data: {escape(man['data_note'])}", highlight=False)
    o.print(f"training store: {escape(json.dumps(man.get('training', {}).get('by_source', {})))}", highlight=False)
    for slot, reason in (man.get("skipped") or {}).items():
        o.print(f"[dim]{slot}: no model ({escape(str(reason))})[/]", highlight=False)
    for slot, m in info["models"].items():
        card = m["card"]
        o.print(f"\n[bold]{escape(m['name'])}[/] predicts {escape(card.get('predicts', slot))}", highlight=False)
        tr = card.get("training", {})
        o.print(f"  trees {m['num_trees']}; rows {tr.get('rows')}; songs {tr.get('songs')}; genres "
                f"{', '.join(tr.get('genres', []))}", highlight=False)
        if card.get("model_config"):
            sel = (card.get("metrics") or {}).get("model_selection") or {}
            alts = ", ".join(f"{n} {v['selection_error']:.3f}" for n, v in sel.items())
            o.print(f"  model {escape(str(card['model_config']))}" + (f" (chosen by the CV: {alts})" if alts else ""),
                    highlight=False)
        o.print(f"  prediction scale {card.get('prediction_scale', 1.0):g} (toward the rules); refines the roles "
                f"{', '.join(sorted(card.get('roles') or {})) or 'all'}", highlight=False)
        lib = card.get("libraries", {})
        o.print("  libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(lib.items())), highlight=False)
        cv = (card.get("metrics") or {}).get("cv_by_song")
        if cv:
            o.print(f"  CV by song ({cv['n_songs']} songs, {cv['n_test_rows']} rows): error {cv['mae']:.3f} vs rules "
                    f"alone {cv['baseline_mae']:.3f} ({100 * cv['improvement']:+.0f} %)", highlight=False)
            if "balance_error_model_lu" in cv:
                o.print(f"  balance error {cv['balance_error_model_lu']:.2f} LU vs rules alone "
                        f"{cv['balance_error_rules_lu']:.2f} LU", highlight=False)
            for k, v in ((card.get("metrics") or {}).get("contributions") or {}).items():
                o.print(f"  {k.replace('_', ' ')}: error {v['mae']:.3f}", highlight=False)
        else:
            o.print("  not cross-validated: " + escape(str((card.get("metrics") or {}).get("note", ""))),
                    highlight=False)
        o.print("  top features: " + ", ".join(f"{escape(n)} {100 * s:.0f} %" for n, s in m["top_features"] if s > 0),
                highlight=False)


@learn_app.command("list")
def list_cmd(store: Optional[Path] = STORE,
             source: Optional[str] = typer.Option(None, "--source", help="reference, feedback or augmented"),
             all_: bool = typer.Option(False, "--all", help="also list augmented copies"),
             json_out: bool = JSON) -> None:
    """List the songs in the training store."""
    from .store import TrainingStore

    cli = _cli()
    with cli._errors():
        with TrainingStore(store) as st:
            songs = st.list_songs(source=source)
            summary = st.summary()
    if not all_ and source is None:
        songs = [s for s in songs if s.source != "augmented"]
    if json_out:
        _print_json({"songs": [s.to_dict() for s in songs], "summary": summary})
        return
    copies: dict[int, int] = {}
    with cli._errors():
        with TrainingStore(store) as st:
            for s in st.list_songs(source="augmented"):
                copies[s.parent_id] = copies.get(s.parent_id, 0) + 1
    for s in songs:
        extra = f", {copies[s.id]} augmented copies" if s.id in copies else ""
        res = s.meta.get("residual_db")
        fit = f", fit residual {res:.1f} dB" if isinstance(res, (int, float)) else ""
        cli.out.print(f"{s.id:>4}  {escape(s.name):<28} {s.source:<9} {escape(s.genre or ''):<10} "
                      f"{s.n_stems} stems, {s.n_targets} targets{fit}{extra}  [{escape(s.licence or '')}]",
                      highlight=False)
    cli.out.print(f"{summary['songs']} songs in {escape(summary['path'])}", highlight=False)


@learn_app.command("remove")
def remove_cmd(song_id: int = typer.Argument(..., help="id shown by `expertmix learn list`"),
               store: Optional[Path] = STORE) -> None:
    """Remove a song (with its augmented copies) from the training store."""
    from .store import TrainingStore

    cli = _cli()
    with cli._errors():
        with TrainingStore(store) as st:
            n = st.remove_song(song_id)
    cli.err.print(f"removed song {song_id} ({n} entries with its augmented copies)", highlight=False)


__all__ = ["learn_app", "default_models_dir"]
