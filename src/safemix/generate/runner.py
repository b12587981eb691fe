"""The generate stage: answer every prompt of the chosen suites into ``<out>/<suite>.jsonl`` with a manifest.

Read top to bottom, a run: loads and deduplicates the suites; works out, without loading the model, every
setting that decides the answers (model fingerprint, adapter hash, template, decoding); checks the output
directory against them; loads the model only if some prompt still lacks an answer; appends answers as batches
finish; rewrites each finished suite in suite order; and records everything in ``manifest.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import safemix
from safemix.data.suites import Suite, load_suite
from safemix.errors import InputError, input_error
from safemix.files import canonical_json, sha256_file, sha256_text
from safemix.generate.base import Generator
from safemix.generate.config import DecodingConfig, GenerateConfig
from safemix.generate.output import (
    append_records,
    finalize_suite,
    open_run_dir,
    read_done,
    read_manifest,
    settings_difference,
    suite_file,
)
from safemix.progress import progress_bar
from safemix.prompts import TemplateName
from safemix.records import Generation, Prompt
from safemix.run_files import DIRECTORY_MANIFEST, GenerationManifest, GenerationSuite, write_manifest
from safemix.versions import compute_environment, package_versions

if TYPE_CHECKING:
    from safemix.generate.vllm_backend import VLLMServers
    from safemix.models import Dtype

log = logging.getLogger(__name__)

SERVER_TEMPLATE = "server-chat"  # the openai backend sends a chat message; the server applies its template
_BACKEND_PACKAGES = {
    "hf": ("torch", "transformers", "peft"),
    "vllm": ("transformers", "openai"),  # the server's own vLLM version is in its log
    "openai": ("openai",),
    "fake": (),
}


def generate_suites(config: GenerateConfig, out_dir: Path, *, data_dir: Path | None,
                    overwrite: bool = False, servers: VLLMServers | None = None) -> dict[str, Any]:
    """Answer every prompt of ``config.suites`` into ``out_dir``, resuming a previous run with the same settings.

    Args:
        config: the ``generate`` section.
        out_dir: output directory: ``<suite>.jsonl`` per suite and ``manifest.json``.
        data_dir: the local data mirror for built-in suites.
        overwrite: replace a previous run in ``out_dir`` even if its settings differ.
        servers: the run's vLLM servers (vllm backend in ``safemix run``); None: a server of its own.

    Returns:
        The manifest written to ``out_dir/manifest.json``.

    Raises:
        InputError: unknown or empty suite, adapter for another base model, template mismatch, or an output
            directory holding a run with other settings.
    """
    config.required_base_model()
    suites = load_suites(config, data_dir)
    decoding = config.resolved_decoding()
    settings = run_settings(config, decoding)
    previous = open_run_dir(out_dir, settings, suites, overwrite=overwrite)
    done = {suite.name: read_done(suite_file(out_dir, suite.name), suite) for suite in suites}
    pending = {suite.name: [p for p in suite.prompts if p.id not in done[suite.name]] for suite in suites}
    n_pending = sum(len(prompts) for prompts in pending.values())
    n_resumed = sum(len(records) for records in done.values())
    if previous is not None and not n_pending and all(
            suite.name in previous.suites and previous.suites[suite.name].complete for suite in suites):
        return previous.to_json()  # every answer is there: nothing to write, not even the manifest
    if n_resumed:
        log.info("%s: resuming with %d answers already written, %d to go", out_dir, n_resumed, n_pending)
    generator = build_generator(config, decoding, settings["template"], out_dir, servers) if n_pending else None
    manifest = _manifest(config, settings, suites, previous, pending)
    write_manifest(out_dir / DIRECTORY_MANIFEST, manifest)
    try:
        with progress_bar(n_pending, "generate", unit="prompt") as bar:
            for suite in suites:
                entry = manifest.suites[suite.name]
                if pending[suite.name]:
                    assert generator is not None
                    _run_suite(generator, suite, pending[suite.name], done[suite.name], out_dir, bar)
                elif entry.complete:
                    continue
                finalize_suite(suite_file(out_dir, suite.name), suite, done[suite.name])
                manifest.suites[suite.name] = entry.model_copy(
                    update={"complete": True, "sha256": sha256_file(suite_file(out_dir, suite.name))})
                write_manifest(out_dir / DIRECTORY_MANIFEST, manifest)
    finally:
        if generator is not None:
            generator.close()
    return manifest.to_json()


def stale_reason(config: GenerateConfig, out_dir: Path, data_dir: Path | None) -> str | None:
    """Why the answers already in ``out_dir`` cannot be kept for ``config`` (other settings, or a suite whose
    prompts changed); None when they can, or when there are none."""
    previous = read_manifest(out_dir)
    if previous is None:
        return None
    difference = settings_difference(previous.settings, run_settings(config, config.resolved_decoding()))
    if difference:
        return difference
    for suite in load_suites(config, data_dir):
        known = previous.suites.get(suite.name)
        if known is not None and known.prompts_sha256 != suite.sha256:
            return f"the prompts of suite {suite.name!r} changed"
    return None


def load_suites(config: GenerateConfig, data_dir: Path | None) -> list[Suite]:
    """Load every suite of the config; none, or one named twice, is an input error."""
    if not config.suites:
        raise InputError("generate.suites: name at least one suite (--suite NAME); 'safemix suites' lists them")
    suites = [load_suite(spec, data_dir) for spec in config.suites]
    for suite in suites:
        if suite.duplicate_ids:
            log.info("%s: dropped %d duplicate prompt(s): %s", suite.name, len(suite.duplicate_ids),
                     ", ".join(suite.duplicate_ids))
    names = [suite.name for suite in suites]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"generate.suites: suite {twice[0]!r} is named twice")
    return suites


def run_settings(config: GenerateConfig, decoding: DecodingConfig) -> dict[str, Any]:
    """Everything that decides the answers, worked out without loading a model; a rerun must match it."""
    base_model = config.required_base_model()
    if config.backend == "openai":
        if config.adapter is not None:
            raise InputError("--adapter: the openai backend cannot load adapters; serve the adapter "
                             "(e.g. vllm serve --lora-modules NAME=DIR) and pass NAME as --base-model")
        if config.template is not None:
            raise InputError(f"--template {config.template}: the openai backend uses the server's chat template")
        model = {"name": base_model, "base_url": config.openai.base_url}
        return {"backend": "openai", "model": model, "adapter": None, "template": SERVER_TEMPLATE,
                "decoding": decoding.model_dump()}
    model, adapter, template = _local_model_settings(config, base_model)
    return {"backend": config.backend, "model": model, "adapter": adapter, "template": template,
            "dtype": _resolved_dtype(config), "decoding": decoding.model_dump()}


def _resolved_dtype(config: GenerateConfig) -> str:
    """The dtype the model runs in (``auto`` resolved for the device), so that manifests say what ran."""
    if config.backend == "fake":
        return config.dtype
    from safemix.models.dtypes import resolve_dtype

    return resolve_dtype(config.dtype, config.device)


def _local_model_settings(config: GenerateConfig, base_model: str) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    from safemix.models.adapters import check_adapter_base, find_adapter_dir
    from safemix.models.resolve import model_fingerprint, resolve_model

    if config.backend == "fake":
        return {"name": base_model}, None, config.template or "alpaca"
    resolved = resolve_model(base_model)
    local_dir = Path(base_model).expanduser()
    name = str(local_dir.resolve()) if local_dir.is_dir() else base_model  # ./m and /abs/m are the same model
    model = {"name": name, "fingerprint": model_fingerprint(resolved)}
    if config.adapter is None:
        return model, None, config.template or "alpaca"
    info = check_adapter_base(config.adapter, base_model, resolved)
    if config.template is not None and config.template != info.template:
        raise input_error(config.adapter, f"adapter was trained with the {info.template!r} template, "
                                          f"not {config.template!r}; drop --template to use the adapter's")
    adapter_dir = find_adapter_dir(config.adapter).resolve()
    return model, {"path": str(adapter_dir), "sha256": adapter_sha256(adapter_dir)}, info.template


def adapter_sha256(adapter_dir: Path) -> str:
    """A hash over every file of an adapter directory: its relative name and the sha256 of its bytes."""
    files = sorted(path for path in adapter_dir.rglob("*") if path.is_file())
    return sha256_text(canonical_json([[str(path.relative_to(adapter_dir)), sha256_file(path)] for path in files]))


def build_generator(config: GenerateConfig, decoding: DecodingConfig, template: str, out_dir: Path | None = None,
                    servers: VLLMServers | None = None) -> Generator:
    """Construct the configured backend (heavy imports happen here, only when there is work to do). The vllm
    backend answers through ``servers`` (``safemix run``) or starts a server of its own, logging into ``out_dir``
    (default: the working directory)."""
    base_model = config.required_base_model()
    if config.backend == "fake":
        from safemix.generate.fake import FakeGenerator

        return FakeGenerator(decoding, config.batch_size)
    if config.backend == "openai":
        from safemix.generate.openai_backend import OpenAIGenerator

        return OpenAIGenerator(base_model, decoding, config.openai)
    if config.backend == "vllm":
        from safemix.generate.vllm_backend import standalone_generator

        if servers is not None:
            return servers.generator(config, decoding, cast(TemplateName, template))
        return standalone_generator(config, decoding, cast(TemplateName, template), out_dir or Path())
    from safemix.generate.hf_backend import HFGenerator

    return HFGenerator.load(base_model, config.adapter, cast(TemplateName, template), decoding, config.batch_size,
                            dtype=cast("Dtype", _resolved_dtype(config)), device=config.device)


def _run_suite(generator: Generator, suite: Suite, prompts: list[Prompt], done: dict[str, Generation], out_dir: Path,
               bar: Any) -> None:
    bar.set_postfix_str(suite.name)
    started = time.perf_counter()
    with open(suite_file(out_dir, suite.name), "a", encoding="utf-8", newline="\n") as handle:
        for batch in generator.iter_batches(prompts):
            append_records(handle, batch)
            done.update((record.id, record) for record in batch)
            bar.update(len(batch))
    elapsed = time.perf_counter() - started
    log.info("%s: %d answers in %.1f s (%.2f prompts/s)", suite.name, len(prompts), elapsed, len(prompts) / elapsed)


def _manifest(config: GenerateConfig, settings: dict[str, Any], suites: list[Suite],
              previous: GenerationManifest | None, pending: dict[str, list[Prompt]]) -> GenerationManifest:
    entries = dict(previous.suites) if previous else {}
    for suite in suites:
        kept = entries.get(suite.name)
        finished = kept is not None and kept.complete and not pending[suite.name]
        entries[suite.name] = GenerationSuite(
            file=suite_file(Path(), suite.name).name,
            source=suite.source,
            source_sha256=suite.source_sha256,
            prompts_sha256=suite.sha256,
            n_prompts=len(suite.prompts),
            categories=suite.category_counts(),
            duplicates_dropped=list(suite.duplicate_ids),
            complete=finished,
            sha256=kept.sha256 if kept is not None and not pending[suite.name] else None,
        )
    return GenerationManifest(
        safemix_version=safemix.__version__,
        settings=settings,
        preset=config.preset,
        batch_size=config.batch_size,
        suites=entries,
        versions=package_versions(_BACKEND_PACKAGES[config.backend]),
        environment=_environment(config, previous, pending),
    )


def _environment(config: GenerateConfig, previous: GenerationManifest | None,
                 pending: dict[str, list[Prompt]]) -> dict[str, Any] | None:
    """The machine that computed the answers (:func:`compute_environment`), recorded, never compared.

    A rerun that computes no answer keeps the previous run's record, so a finished directory opened on another
    machine still names the one that made it; a resumed run names the machine that finished it. None for the
    backends whose answers do not depend on this machine's arithmetic (openai: the server's; fake).
    """
    if not any(pending.values()) and previous:
        return previous.environment
    if config.backend == "hf":
        return compute_environment(config.device)
    if config.backend == "vllm":
        return compute_environment("cuda")
    return None
