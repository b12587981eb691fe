"""The ``safemix`` command line: thin commands that parse, load a config and call a library function.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, record or key, and the problem);
1 runtime failure. ``--debug`` shows tracebacks. This module imports nothing heavy (no torch), so
``safemix --help``, ``validate`` and ``data ls`` stay fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from pydantic import ValidationError

from safemix.errors import InputError

log = logging.getLogger("safemix")

app = typer.Typer(
    name="safemix",
    help="Safety-tune instruction-following models with exact safety-data mixtures, and measure the trade-off.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Data: the source catalog, fetching, and building training mixtures.", no_args_is_help=True)
app.add_typer(data_app, name="data")

SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set data.n_general=900 (repeatable).")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Local data mirror laid out like shared/data (default $SAFEMIX_DATA_DIR).")
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings and errors only.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    overrides: SetOption = None,
) -> None:
    """Validate an experiment config; print every error with its dotted path (exit 2 if any)."""
    from safemix.config import ConfigError, config_hash, load_config

    try:
        experiment = load_config(config, overrides or [])
    except ConfigError as err:
        for problem in err.problems:
            typer.echo(f"{err.source}: {problem}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{config}: ok (config hash {config_hash(experiment)})")


@data_app.command("ls")
def data_ls(
    data_dir: DataDirOption = None,
    kind: Annotated[str | None, typer.Option(help="Only sources of this kind (instructions, prompts, ...).")] = None,
) -> None:
    """List the built-in data sources: kind, rows, license, and whether a local copy is present."""
    from safemix.data.catalog import cache_dir, default_data_dir, load_catalog

    root = default_data_dir(data_dir)
    typer.echo(f"{'name':30} {'kind':20} {'rows':>6}  {'local':6} license")
    for name, source in load_catalog().items():
        if kind and source.kind != kind:
            continue
        present = any(r is not None and (r / source.mirror_path).is_file() for r in (root, cache_dir()))
        typer.echo(f"{name:30} {source.kind:20} {source.rows:>6}  {'yes' if present else 'no':6} {source.license}")


@data_app.command("show")
def data_show(name: Annotated[str, typer.Argument(help="Catalog source name.")], data_dir: DataDirOption = None) -> None:
    """Show one source: description, origin, sha256, license, rows, and the local copy if there is one."""
    from safemix.data.catalog import default_data_dir, get_source, local_path

    source = get_source(name)
    for key, value in source.model_dump(exclude={"origin"}, exclude_defaults=True).items():
        typer.echo(f"{key}: {value}")
    typer.echo(f"origin: {source.origin.download_url}")
    typer.echo(f"local: {local_path(source, default_data_dir(data_dir)) or 'not present'}")


@data_app.command("fetch")
def data_fetch(
    names: Annotated[list[str], typer.Argument(help="Catalog source names ('all' for every one).")],
    data_dir: DataDirOption = None,
) -> None:
    """Download sources into the cache and verify their sha256; nothing is downloaded when a copy is present."""
    from safemix.data.catalog import default_data_dir, get_source, load_catalog, locate

    root = default_data_dir(data_dir)
    wanted = list(load_catalog()) if names == ["all"] else names
    for name in wanted:
        get_source(name)  # fail on an unknown name before downloading anything
    for name in wanted:
        typer.echo(f"{name}: {locate(name, root)}")


@data_app.command("build")
def data_build(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    config: Annotated[Path | None, typer.Option("--config", help="Experiment YAML with a 'data' section.")] = None,
    general: Annotated[str | None, typer.Option(help="General source: catalog name, path, or hf:owner/name[@rev].")] = None,
    safety: Annotated[str | None, typer.Option(help="Safety source: catalog name, path, or hf:owner/name[@rev].")] = None,
    n_general: Annotated[int | None, typer.Option("--n-general", help="General examples per mixture.")] = None,
    n_safety: Annotated[str | None, typer.Option("--n-safety", help="Comma-separated K values, e.g. 0,100,300.")] = None,
    val_size: Annotated[int | None, typer.Option("--val-size", help="Validation examples from the general pool.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the permutations.")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Build mixture-K.jsonl for every K, val.jsonl and manifest.json into --out."""
    from safemix.config import (
        apply_overrides,
        config_hash,
        read_config_file,
        set_key,
        validate_config,
        write_resolved_config,
    )
    from safemix.data.catalog import default_data_dir
    from safemix.data.mixture import build_mixtures

    raw: dict[str, Any] = read_config_file(config) if config else {}
    flags = {
        "data.general": general,
        "data.safety": safety,
        "data.n_general": n_general,
        "data.n_safety": parse_k_list(n_safety) if n_safety is not None else None,
        "data.val_size": val_size,
        "seed": seed,
        "data_dir": str(data_dir) if data_dir else None,
    }
    for dotted, value in flags.items():
        if value is not None:
            set_key(raw, dotted.split("."), value)
    experiment = validate_config(apply_overrides(raw, overrides or []), str(config) if config else "command line")
    root = default_data_dir(experiment.data_dir)
    d = experiment.data
    manifest = build_mixtures(
        d.general, d.safety, d.n_general, d.n_safety, out, val_size=d.val_size, seed=experiment.seed,
        data_dir=root, config_hash=config_hash(experiment),
    )
    write_resolved_config(experiment, out)
    for name, info in manifest["outputs"].items():
        typer.echo(f"{out / name}: {info['rows']} examples")


def parse_k_list(text: str) -> list[int]:
    """Parse ``--n-safety`` ("0,100,300") into distinct non-negative integers, or raise an input error."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise InputError(f"--n-safety {text!r}: expected comma-separated non-negative integers, e.g. 0,100,300") from None
    if any(value < 0 for value in values):
        raise InputError(f"--n-safety {text!r}: values must be >= 0")
    if len(set(values)) != len(values):
        raise InputError(f"--n-safety {text!r}: values must be distinct")
    return values


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app and map errors to exit codes (2 input, 1 runtime)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="safemix", standalone_mode=False)
    except InputError as err:
        if debug:
            raise
        typer.echo(f"safemix: error: {err}", err=True)
        code = 2
    except ValidationError as err:
        if debug:
            raise
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        typer.echo(f"safemix: error: {where}: {problem['msg'].removeprefix('Value error, ')}", err=True)
        code = 2
    except click.ClickException as err:
        err.show()
        code = err.exit_code
    except click.exceptions.Abort:
        typer.echo("safemix: aborted", err=True)
        code = 130
    except Exception as err:
        if debug:
            raise
        typer.echo(f"safemix: error: {type(err).__name__}: {err} (run with --debug for the traceback)", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
