"""The ``expertmix`` command line (Typer).

Exit codes (stable, for scripts): 0 success; 1 unexpected failure; 2 bad input or usage
(unreadable stems, unknown role, bad option); 3 bad plan, rule or genre file; 4 model problem;
5 render failure; 6 output folder problem.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import ExpertmixError, InputError

app = typer.Typer(name="expertmix", add_completion=False, no_args_is_help=True,
                  help="An automatic mixing engineer: stems in; mix, master, processed stems and an editable plan out.")
genres_app = typer.Typer(help="List and show genre profiles.", no_args_is_help=True)
app.add_typer(genres_app, name="genres")
rules_app = typer.Typer(help="Read, check, test and explain the rulebook.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

err = Console(stderr=True)
out = Console()

DEMO_OUT = Path("expertmix-demo")


def _fail(exc: ExpertmixError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ExpertmixError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: nothing was written")
        raise typer.Exit(130)


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback: a rich bar on a terminal, plain lines otherwise, nothing if quiet."""
    if quiet:
        yield lambda stage, done, total: None
        return
    if err.is_terminal:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def update(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total)

            yield update
        return
    last = {"stage": ""}

    def plain(stage: str, done: int, total: int) -> None:
        head = stage.split(" ")[0]
        if head != last["stage"]:
            err.print(f"{stage} …", highlight=False)
            last["stage"] = head

    yield plain


def _roles(role: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in role:
        if "=" not in item:
            raise InputError(f"--role {item!r} is not FILE=ROLE", hint="write it like --role track07.wav=bass")
        name, value = item.split("=", 1)
        overrides[name.strip()] = value.strip()
    return overrides


def _summary(result, quiet: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    from .pipeline import describe

    info = describe(result)
    if as_json:
        out.print_json(json.dumps(info))
        return
    if quiet:
        return
    m = result.master
    ok = "[green]on target[/]" if m.within_target else "[yellow]target missed, see report.md[/]"
    err.print(f"master: {m.master['integrated_lufs']:.1f} LUFS, {m.master['true_peak_dbtp']:.1f} dBTP, "
              f"LRA {m.master['loudness_range_lu']:.1f} LU ({ok})")
    for note in result.plan.notes + m.notes:
        err.print(f"  note: {escape(note)}", highlight=False)
    err.print(f"wrote {result.out_dir}/: master.wav mix.wav stems/ plan.yaml report.md", highlight=False)


GENRE = typer.Option("pop", "--genre", "-g", help="genre profile (see `expertmix genres list`), or auto to guess it from the stems")
PRESET = typer.Option(None, "--preset", "-p", help="delivery preset: streaming (-14), apple (-16), loud (-9), broadcast (-23); default: the genre's")
TARGET = typer.Option(None, "--target-lufs", min=-36.0, max=-5.0, help="custom master loudness, LUFS (overrides --preset)")
CEILING = typer.Option(None, "--ceiling", min=-9.0, max=0.0, help="true-peak ceiling of the master, dBTP (default: the preset's, -1)")
ROLE = typer.Option([], "--role", "-r", help="set a stem's role: FILE=ROLE (repeatable; see `expertmix roles`)")
ROLES_FILE = typer.Option(None, "--roles", exists=True, dir_okay=False, help="YAML mapping file or stem name -> role")
EXCLUDE = typer.Option([], "--exclude", help="leave out stems matching a name or glob (repeatable)")
RATE = typer.Option(None, "--sample-rate", min=8000, max=192000, help="session sample rate, Hz (default: the stems' most common rate)")
SKIP_SILENT = typer.Option(False, "--skip-silent", help="leave silent stems out instead of stopping with an error")
OVERWRITE = typer.Option(False, "--overwrite", help="replace an existing expertmix output folder")
QUIET = typer.Option(False, "--quiet", "-q", help="print nothing but errors")
JSON = typer.Option(False, "--json", help="print a JSON summary on stdout")
GENRES_DIR = typer.Option(None, "--genres", exists=True, file_okay=False, help="folder of your own genre profiles")
NO_LEARNING = typer.Option(False, "--no-learning", help="rules alone: do not apply the learned refinements")
MODELS_DIR = typer.Option(None, "--models", exists=True, file_okay=False,
                          help="your own trained models (from `expertmix learn train`) instead of the bundled ones")
RULES_DIR = typer.Option(None, "--rules", exists=True, help="folder (or file) of your own rules: same id replaces a bundled rule")


@app.command()
def mix(stems_dir: Path = typer.Argument(..., help="folder of stems (WAV, FLAC, AIFF, OGG, MP3), one per file"),
        out_dir: Path = typer.Option(..., "--out", "-o", help="output folder (created; must not exist unless --overwrite)"),
        genre: str = GENRE, preset: Optional[str] = PRESET, target_lufs: Optional[float] = TARGET,
        ceiling: Optional[float] = CEILING, role: list[str] = ROLE, roles: Optional[Path] = ROLES_FILE, exclude: list[str] = EXCLUDE,
        sample_rate: Optional[int] = RATE, skip_silent: bool = SKIP_SILENT, overwrite: bool = OVERWRITE,
        genres: Optional[Path] = GENRES_DIR, rules: Optional[Path] = RULES_DIR, no_learning: bool = NO_LEARNING,
        models: Optional[Path] = MODELS_DIR, quiet: bool = QUIET, json_out: bool = JSON) -> None:
    """Analyse the stems, plan the mix, render mix + master + processed stems, write plan and report."""
    from .workers import started_pool

    with started_pool() as pool:  # the workers boot while this process imports the pipeline
        from .pipeline import run_mix

        with _errors(), _progress(quiet or json_out) as progress:
            result = run_mix(stems_dir, out_dir, genre=genre, preset=preset, target_lufs=target_lufs,
                             ceiling_dbtp=ceiling, role_overrides=_roles(role), roles_file=roles, exclude=exclude,
                             sample_rate_hz=sample_rate, skip_silent=skip_silent, overwrite=overwrite,
                             genres_dir=genres, rules_dir=rules, learning=not no_learning, models_dir=models,
                             progress=progress, pool=pool)
    _summary(result, quiet, json_out)


@app.command()
def plan(stems_dir: Path = typer.Argument(..., help="folder of stems"),
         out_file: Path = typer.Option(..., "--out", "-o", help="plan file to write (YAML)"),
         genre: str = GENRE, preset: Optional[str] = PRESET, target_lufs: Optional[float] = TARGET,
         ceiling: Optional[float] = CEILING, role: list[str] = ROLE, roles: Optional[Path] = ROLES_FILE, exclude: list[str] = EXCLUDE,
         sample_rate: Optional[int] = RATE, skip_silent: bool = SKIP_SILENT, overwrite: bool = OVERWRITE,
         genres: Optional[Path] = GENRES_DIR, rules: Optional[Path] = RULES_DIR, no_learning: bool = NO_LEARNING,
         models: Optional[Path] = MODELS_DIR, quiet: bool = QUIET) -> None:
    """Analyse and plan only: write the editable plan, render nothing."""
    from .pipeline import run_plan

    with _errors():
        if out_file.exists() and not overwrite:
            from .errors import OutputError

            raise OutputError(f"{out_file} already exists", hint="pass --overwrite or choose another file")
        with _progress(quiet) as progress:
            p = run_plan(stems_dir, out_file, genre=genre, preset=preset, target_lufs=target_lufs, ceiling_dbtp=ceiling,
                         role_overrides=_roles(role), roles_file=roles, exclude=exclude, sample_rate_hz=sample_rate,
                         skip_silent=skip_silent, genres_dir=genres, rules_dir=rules, learning=not no_learning,
                         models_dir=models, progress=progress)
    if not quiet:
        err.print(f"wrote {out_file} ({len(p.tracks)} tracks); edit it and run `expertmix render {out_file} -o OUT`",
                  highlight=False)


@app.command()
def analyse(stems_dir: Path = typer.Argument(..., help="folder of stems"),
            out_file: Path = typer.Option(..., "--out", "-o", help="descriptors file to write (YAML)"),
            role: list[str] = ROLE, roles: Optional[Path] = ROLES_FILE, exclude: list[str] = EXCLUDE,
            sample_rate: Optional[int] = RATE, skip_silent: bool = SKIP_SILENT, overwrite: bool = OVERWRITE,
            processes: int = typer.Option(2, "--processes", min=1, max=64, help="worker processes"),
            quiet: bool = QUIET) -> None:
    """Listen only: every stem's descriptors, the masking between stems and the tempo, as YAML."""
    from .pipeline import run_analyse

    with _errors():
        if out_file.exists() and not overwrite:
            from .errors import OutputError

            raise OutputError(f"{out_file} already exists", hint="pass --overwrite or choose another file")
        with _progress(quiet) as progress:
            a = run_analyse(stems_dir, out_file, role_overrides=_roles(role), roles_file=roles, exclude=exclude,
                            sample_rate_hz=sample_rate, skip_silent=skip_silent, processes=processes,
                            progress=progress)
    if not quiet:
        tempo = f"{a.tempo_bpm:.1f} BPM" if a.tempo_bpm else "no clear tempo"
        err.print(f"wrote {out_file}: {len(a.stems)} stems, {tempo}, "
                  f"{len(a.descriptors.masking) if a.descriptors else 0} masking pairs", highlight=False)


@app.command()
def render(plan_file: Path = typer.Argument(..., help="mix plan (YAML) written by `expertmix mix` or `expertmix plan`"),
           out_dir: Path = typer.Option(..., "--out", "-o", help="output folder"),
           stems: Optional[Path] = typer.Option(None, "--stems", help="stems folder, if it moved since the plan was written"),
           overwrite: bool = OVERWRITE, quiet: bool = QUIET, json_out: bool = JSON) -> None:
    """Re-render an (edited) plan without re-analysing."""
    from .workers import started_pool

    with started_pool() as pool:
        from .pipeline import run_render

        with _errors(), _progress(quiet or json_out) as progress:
            result = run_render(plan_file, out_dir, stems_dir=stems, overwrite=overwrite, progress=progress, pool=pool)
    _summary(result, quiet, json_out)


@app.command()
def demo(out_dir: Path = typer.Option(DEMO_OUT, "--out", "-o", help="output folder"),
         genre: str = GENRE, overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite",
                                                            help="replace an earlier demo output"),
         quiet: bool = QUIET) -> None:
    """Mix the bundled demo song ("Paper Lanterns", CC0/MIT) into ./expertmix-demo."""
    from .resources import data_dir
    from .workers import started_pool

    stems_dir = data_dir("demo")
    if not quiet:
        err.print(f"mixing the bundled demo ({stems_dir}) into {out_dir}/", highlight=False)
    with started_pool() as pool:
        from .pipeline import run_mix

        with _errors(), _progress(quiet) as progress:
            result = run_mix(stems_dir, out_dir, genre=genre, overwrite=overwrite, progress=progress, pool=pool)
    _summary(result, quiet, False)


@app.command()
def measure(audio: Path = typer.Argument(..., exists=True, dir_okay=False, help="an audio file"),
            json_out: bool = JSON) -> None:
    """Measure a file: integrated loudness (BS.1770-4), true peak, loudness range."""
    from .loudness import measure_loudness_file

    with _errors():
        stats = measure_loudness_file(str(audio))
    d = stats.to_dict()
    if json_out:
        out.print_json(json.dumps(d))
    else:
        for k, v in d.items():
            out.print(f"{k:<22} {v:8.2f}")


@app.command("evaluate")
def evaluate_cmd(stems_dir: Path = typer.Argument(..., help="folder of the raw stems"),
                 out_dir: Path = typer.Argument(..., help="an expertmix output folder (or a mix file)"),
                 reference: Optional[Path] = typer.Option(None, "--reference", exists=True, dir_okay=False,
                                                          help="a reference mix to compare the spectrum with"),
                 reference_stems: Optional[Path] = typer.Option(None, "--reference-stems", exists=True, file_okay=False,
                                                                help="processed reference stems (same names) for the balance"),
                 reference_gains: Optional[Path] = typer.Option(None, "--reference-gains", exists=True, dir_okay=False,
                                                                help="meta.json or YAML of per-stem gains that restore a reference balance"),
                 report: Optional[Path] = typer.Option(None, "--report", help="also write the evaluation as YAML"),
                 json_out: bool = JSON) -> None:
    """Objective measures of a mix: balance and spectrum against a reference, width, loudness."""
    from .evaluate import evaluate
    from .io import atomic_write_text

    with _errors():
        ev = evaluate(stems_dir, out_dir, reference_mix=reference, reference_stems_dir=reference_stems,
                      reference_gains=reference_gains)
        if report is not None:
            atomic_write_text(report, ev.to_yaml())
    typer.echo(ev.to_json() if json_out else ev.to_markdown())


@app.command("roles")
def roles_cmd() -> None:
    """List the instrument roles a stem can have."""
    from .roles import ROLE_FAMILY, ROLES

    for name, doc in ROLES.items():
        out.print(f"{name:<16} [{ROLE_FAMILY[name]}] {doc}", highlight=False)


@app.command()
def presets() -> None:
    """List the delivery presets of the master."""
    from .master import PRESETS

    for p in PRESETS.values():
        out.print(f"{p.name:<10} {p.target_lufs:6.1f} LUFS  {p.ceiling_dbtp:5.1f} dBTP  {p.doc}", highlight=False)


@app.command()
def parameters() -> None:
    """List every plan parameter with its default, range and meaning."""
    from .plan import parameter_table

    for row in parameter_table():
        rng = f"[{row['min']}, {row['max']}]" if row["min"] is not None or row["max"] is not None else ""
        out.print(f"{row['model']}.{row['field']:<24} default={row['default']!s:<10} {rng:<18} {row['doc']}",
                  highlight=False)


@genres_app.command("list")
def genres_list(genres: Optional[Path] = GENRES_DIR) -> None:
    """List the available genre profiles."""
    from .genres import available_genres, load_genre

    with _errors():
        for name in sorted(available_genres(genres)):
            if name == "base":
                continue
            g = load_genre(name, genres)
            out.print(f"{name:<12} {g.description}", highlight=False)


@genres_app.command("show")
def genres_show(name: str, genres: Optional[Path] = GENRES_DIR) -> None:
    """Show a genre profile with inheritance resolved."""
    import yaml

    from .genres import load_genre

    with _errors():
        g = load_genre(name, genres)
    out.print(yaml.safe_dump(g.model_dump(), sort_keys=False), highlight=False)


@rules_app.command("list")
def rules_list(rules: Optional[Path] = RULES_DIR, scope: Optional[str] = typer.Option(None, help="only this scope")) -> None:
    """List the rules: id, scope, priority and summary, by file."""
    from .rules import load_rulebook

    with _errors():
        book = load_rulebook(rules)
    last = None
    for r in book.rules:
        if scope and r.scope != scope:
            continue
        if r.file != last:
            out.print(f"[bold]{escape(Path(r.file).name)}[/]")
            last = r.file
        out.print(f"  {r.id:<30} {r.scope:<5} {r.priority:>4}  {escape(r.summary)}", highlight=False)
    out.print(f"{len(book.rules)} rules", highlight=False)


@rules_app.command("show")
def rules_show(rule_id: str, rules: Optional[Path] = RULES_DIR) -> None:
    """Show one rule as written, with its file and line."""
    import yaml

    from .rules import load_rulebook

    with _errors():
        book = load_rulebook(rules)
        try:
            r = book.get(rule_id)
        except KeyError:
            import difflib

            close = difflib.get_close_matches(rule_id, book.ids(), n=1)
            raise InputError(f"no rule {rule_id!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                             hint="see `expertmix rules list`") from None
    out.print(f"# {r.file}:{r.line}", highlight=False)
    out.print(yaml.safe_dump([r.raw], sort_keys=False, allow_unicode=True, width=100), highlight=False)


@rules_app.command("check")
def rules_check(rules_dir: Optional[Path] = typer.Argument(None, exists=True, help="your rules folder (default: bundled only)")) -> None:
    """Load the rulebook (bundled + yours) and report the first error with file, line, rule and field."""
    from .rules import load_rulebook

    with _errors():
        book = load_rulebook(rules_dir)
    out.print(f"ok: {len(book.rules)} rules from {len(book.files)} files", highlight=False)


@rules_app.command("test")
def rules_test(rules_dir: Optional[Path] = typer.Argument(None, exists=True, help="your rules folder (default: bundled only)"),
               genres: Optional[Path] = GENRES_DIR) -> None:
    """Run every rule's must-fire / must-stay-silent examples."""
    from .rules import load_rulebook, test_rulebook

    with _errors():
        book = load_rulebook(rules_dir)
        problems = test_rulebook(book, genres)
    examples = sum(len(r.examples) for r in book.rules)
    for rid, items in problems.items():
        r = book.get(rid)
        for item in items:
            err.print(f"[red]FAIL[/] {escape(r.file)}:{r.line} {rid}: {escape(item)}", highlight=False)
    if problems:
        err.print(f"{len(problems)} of {len(book.rules)} rules failed their examples", highlight=False)
        raise typer.Exit(3)
    out.print(f"ok: {len(book.rules)} rules, {examples} examples pass", highlight=False)


@rules_app.command("vocabulary")
def rules_vocabulary(json_out: bool = JSON) -> None:
    """Everything a rule may name: scopes, conditions, terms, actions, slots, descriptors."""
    from .rules import vocabulary

    v = vocabulary()
    if json_out:
        out.print_json(json.dumps(v))
        return
    for section in ("scopes", "conditions", "terms", "actions"):
        out.print(f"[bold]{section}[/]")
        items = v[section]
        if isinstance(items, dict):
            for k, doc in items.items():
                out.print(f"  {k:<22} {escape(str(doc))}", highlight=False)
        else:
            out.print("  " + ", ".join(items), highlight=False)
    out.print("[bold]slots[/]")
    for scope, slots in v["slots"].items():
        for n, s in slots.items():
            lo, hi = s["range"]
            rng = f"[{lo:g}, {hi:g}]" if lo is not None and hi is not None else ""
            out.print(f"  {scope:<5} {n:<28} {s['kind']:<5} {rng:<16} {escape(s['doc'])}", highlight=False)
    out.print("[bold]descriptors[/]")
    for n, doc in v["descriptors"].items():
        out.print(f"  {n:<24} {escape(doc)}", highlight=False)
    out.print(f"[bold]genre parameters[/]  {', '.join(v['genre_parameters'])}", highlight=False)
    out.print("[bold]bands[/]  " + ", ".join(f"{b} {lo:g}-{hi:g} Hz" for b, (lo, hi) in v["bands"].items()), highlight=False)


@rules_app.command("explain")
def rules_explain(stems_dir: Path = typer.Argument(..., help="folder of stems"),
                  rule_id: Optional[str] = typer.Argument(None, help="only this rule"),
                  genre: str = GENRE, role: list[str] = ROLE, roles: Optional[Path] = ROLES_FILE,
                  exclude: list[str] = EXCLUDE, rules: Optional[Path] = RULES_DIR, genres: Optional[Path] = GENRES_DIR,
                  stem: Optional[str] = typer.Option(None, "--stem", help="only this stem"),
                  json_out: bool = JSON, quiet: bool = QUIET) -> None:
    """Why each rule fired or stayed silent on this session, what it proposed and what overrode it."""
    from .pipeline import explain_session

    with _errors(), _progress(quiet or json_out) as progress:
        trace = explain_session(stems_dir, genre=genre, role_overrides=_roles(role), roles_file=roles, exclude=exclude,
                                rules_dir=rules, genres_dir=genres, progress=progress)
        if rule_id is not None and rule_id not in {t.rule_id for t in trace}:
            raise InputError(f"no rule {rule_id!r} in the rulebook", hint="see `expertmix rules list`")
    rows = [t for t in trace if (rule_id is None or t.rule_id == rule_id) and (stem is None or t.target == stem
                                                                               or t.target.startswith(f"{stem}<-"))]
    if json_out:
        out.print_json(json.dumps([t.to_dict() for t in rows]))
        return
    for t in rows:
        if t.fired:
            sets = ", ".join(f"{k}={v}" for k, v in t.proposed.items())
            over = "; overridden: " + ", ".join(f"{k} by {v}" for k, v in t.overridden.items()) if t.overridden else ""
            out.print(f"[green]fired [/] {t.rule_id:<28} {escape(t.target):<18} {escape(sets)}{escape(over)}", highlight=False)
        else:
            out.print(f"[dim]silent {t.rule_id:<28} {escape(t.target):<18} {escape(t.reason)}[/]", highlight=False)


from .cli_learn import learn_app  # noqa: E402  (the `learn` commands; imports cli lazily)

app.add_typer(learn_app, name="learn")


def _version(value: bool) -> None:
    if value:
        out.print(f"expertmix {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """expertmix: the engineer has the last word; the plan is yours to edit."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:  # click's usage errors exit 2 already; keep codes as they are
        raise exc
    except Exception as exc:  # an unexpected failure: say so plainly, exit 1
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
                  "please report it with the command you ran", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
