"""The files of a ``safemix run`` directory: where each stage writes, and the models of ``run.json`` and the manifests.

Every stage finds another stage's files through :class:`RunLayout` and reads and writes ``run.json`` and the
manifests through the models and functions here, so no stage spells out another stage's file names. The layout::

    RUN_DIR/run.json                        RunIndex: the models of the sweep, the suites, the scorers
    RUN_DIR/data[/<format>][/seed-<seed>]/  mixture-K.jsonl, val.jsonl, manifest.json (MixtureManifest)
    RUN_DIR/train/<slug>/                   adapter/, train_log.json, manifest.json (TrainManifest)
    RUN_DIR/generations/<slug>/             <suite>.jsonl, manifest.json (GenerationManifest)
    RUN_DIR/scores/<slug>/                  <scorer>.jsonl, <scorer>.manifest.json (ScoreManifest)
    RUN_DIR/capability/<slug>/              the capability stage's results
    RUN_DIR/winrate/<slug>/                 <suite>.jsonl, <suite>.manifest.json (WinrateManifest)
    RUN_DIR/logs/                           logs of processes a run starts (the vLLM servers)

Paths in ``run.json`` are relative to the run directory. Manifests are written as indented, key-sorted JSON
(:func:`safemix.files.write_json_atomic`), so a model written here gives the same bytes as the dictionaries
earlier versions wrote; keys a model does not name are kept as they were read. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safemix.errors import first_problem, input_error
from safemix.files import canonical_json, sha256_text, write_json_atomic

RUN_INDEX = "run.json"
RESOLVED_CONFIG = "config.yaml"
METRICS = "metrics.json"
DATA_DIR = "data"
TRAIN_DIR = "train"
GENERATIONS_DIR = "generations"
SCORES_DIR = "scores"
CAPABILITY_DIR = "capability"
WINRATE_DIR = "winrate"
LOGS_DIR = "logs"
#: The manifest of a stage that writes a directory (mixtures, an adapter, a model's generations).
DIRECTORY_MANIFEST = "manifest.json"
#: The training log of an adapter; written last, it marks the training run complete.
TRAIN_LOG = "train_log.json"
#: The validation split beside the mixtures.
VALIDATION_FILE = "val.jsonl"
#: The number of hex digits of :func:`mixture_config_hash`.
MIXTURE_HASH_CHARS = 12


def mixture_file_name(n_safety: int) -> str:
    """The mixture with ``n_safety`` safety examples: ``mixture-K.jsonl``."""
    return f"mixture-{n_safety}.jsonl"


def sidecar_manifest(out: Path) -> Path:
    """The manifest beside an output file: ``scores/refusal-judge.jsonl`` -> ``scores/refusal-judge.manifest.json``."""
    return out.with_name(out.stem + ".manifest.json")


class ModelEntry(BaseModel):
    """One model of the sweep: the untuned base model (``k`` None) or an adapter trained with ``k`` safety examples.

    Attributes:
        label: unique within the run; the ``model`` field of its score lines and metric rows (``base``, ``k300``;
            with several base models, templates, formats, seeds or presets, those axes are spelled out, e.g.
            ``smollm2-135m-instruct/chat/seed1/k300``).
        model: the base model's name plus each swept axis that varies in the run except the seed, e.g.
            ``tiny [template=chat]``; the ``model`` column of ``summary.csv``. Adapters that differ only in their
            seed share it, so the report can aggregate over seeds.
        slug: the label made safe as one directory name; every per-model directory is named by it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    model: str
    slug: str
    base_model: str
    template: str
    preset: str
    k: int | None = Field(default=None, description="safety examples in the training mixture; None: untuned base")
    format: str | None = Field(default=None, description="the safety examples' training format, when swept")
    seed: int | None = Field(default=None, description="mixture sampling and training seed; None: untuned base")
    train_dir: str | None = Field(default=None, description="safemix train output (adapter/, train_log.json)")
    generations_dir: str = Field(description="<suite>.jsonl per suite and manifest.json")
    scores_dir: str = Field(description="<scorer>.jsonl and <scorer>.manifest.json per scorer")


class SuiteEntry(BaseModel):
    """One evaluation suite of the run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    n_prompts: int
    categories: dict[str, int]


class RunIndex(BaseModel):
    """``RUN_DIR/run.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    config_hash: str
    suites: list[SuiteEntry]
    scorers: list[str] = Field(description="scorer names, in config order")
    models: list[ModelEntry]

    def model_by_label(self, label: str) -> ModelEntry:
        """The model entry with this label (KeyError when there is none)."""
        for entry in self.models:
            if entry.label == label:
                return entry
        raise KeyError(label)


def write_run_index(run_dir: Path, index: RunIndex) -> None:
    """Write ``run.json`` atomically."""
    write_json_atomic(RunLayout(Path(run_dir)).index, index.model_dump(mode="json"))


def read_run_index(run_dir: Path) -> RunIndex:
    """Read ``RUN_DIR/run.json``.

    Raises:
        InputError: the directory holds no run index, or it does not validate.
    """
    path = RunLayout(Path(run_dir)).index
    if not path.is_file():
        raise input_error(run_dir, f"not a safemix run directory (no {RUN_INDEX}; 'safemix run CONFIG' makes one)")
    return _validated(RunIndex, path)


@dataclass(frozen=True)
class RunLayout:
    """Where each stage's files live in one run directory.

    Attributes:
        run_dir: the run directory.
    """

    run_dir: Path

    @property
    def index(self) -> Path:
        """``RUN_DIR/run.json``."""
        return self.run_dir / RUN_INDEX

    @property
    def resolved_config(self) -> Path:
        """``RUN_DIR/config.yaml``: the resolved experiment config."""
        return self.run_dir / RESOLVED_CONFIG

    @property
    def logs(self) -> Path:
        """``RUN_DIR/logs``: logs of the processes a run starts."""
        return self.run_dir / LOGS_DIR

    @property
    def metrics(self) -> Path:
        """``RUN_DIR/metrics.json``: the metric rows of the scores."""
        return self.run_dir / METRICS

    def mixtures_dir(self, safety_format: str | None = None, seed: int | None = None) -> Path:
        """``RUN_DIR/data``, then ``<format>`` when the run sweeps formats, then ``seed-<seed>`` for a seed other
        than the experiment's (the caller passes None for the parts that do not apply)."""
        out = self.run_dir / DATA_DIR
        out = out / safety_format if safety_format is not None else out
        return out / f"seed-{seed}" if seed is not None else out

    def mixture_manifests(self) -> list[Path]:
        """Every mixture manifest of the run (one per safety format and seed), in path order."""
        data = self.run_dir / DATA_DIR
        return sorted(path for pattern in (DIRECTORY_MANIFEST, f"*/{DIRECTORY_MANIFEST}", f"*/*/{DIRECTORY_MANIFEST}")
                      for path in data.glob(pattern))

    def train_dir(self, entry: ModelEntry) -> Path | None:
        """The adapter's training directory; None for the untuned base model."""
        return None if entry.train_dir is None else self.run_dir / entry.train_dir

    def adapter(self, entry: ModelEntry) -> Path | None:
        """The adapter's PEFT directory; None for the untuned base model."""
        train_dir = self.train_dir(entry)
        return None if train_dir is None else train_dir / "adapter"

    def generations_dir(self, entry: ModelEntry) -> Path:
        """The model's ``<suite>.jsonl`` files and their manifest."""
        return self.run_dir / entry.generations_dir

    def scores_dir(self, entry: ModelEntry) -> Path:
        """The model's ``<scorer>.jsonl`` files and their manifests."""
        return self.run_dir / entry.scores_dir

    def score_file(self, entry: ModelEntry, scorer: str) -> Path:
        """``RUN_DIR/scores/<slug>/<scorer>.jsonl`` (``scorer``: the scores file's stem, as in ``run.json``)."""
        return self.scores_dir(entry) / f"{scorer}.jsonl"

    def capability_dir(self, entry: ModelEntry | None = None) -> Path:
        """``RUN_DIR/capability``, or the directory of one model's results."""
        stage = self.run_dir / CAPABILITY_DIR
        return stage if entry is None else stage / entry.slug

    def winrate_dir(self, entry: ModelEntry | None = None) -> Path:
        """``RUN_DIR/winrate``, or the directory of one model's comparisons."""
        stage = self.run_dir / WINRATE_DIR
        return stage if entry is None else stage / entry.slug

    def winrate_file(self, entry: ModelEntry, suite: str) -> Path:
        """``RUN_DIR/winrate/<slug>/<suite>.jsonl``: one model's comparison on one suite."""
        return self.winrate_dir(entry) / f"{suite}.jsonl"


class ModelDirs(NamedTuple):
    """The per-model directories of a :class:`ModelEntry`, relative to the run directory."""

    train_dir: str | None
    generations_dir: str
    scores_dir: str


def model_dirs(slug: str, train_slug: str | None) -> ModelDirs:
    """Where one model's files go: ``train/<train_slug>`` (None for the untuned base model, which has no
    ``train_slug``), ``generations/<slug>`` and ``scores/<slug>``."""
    return ModelDirs(None if train_slug is None else f"{TRAIN_DIR}/{train_slug}", f"{GENERATIONS_DIR}/{slug}",
                     f"{SCORES_DIR}/{slug}")


# ------------------------------------------------------------------------------------------------ manifests


class Manifest(BaseModel):
    """What every manifest shares: the keys a reader needs are fields; every other key is kept as it was read, so
    a file written by another safemix version reads, and writes back, unchanged."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object written to disk."""
        return self.model_dump(mode="json")


class MixtureSettings(BaseModel):
    """The mixture counts and seed of a :class:`MixtureManifest`."""

    model_config = ConfigDict(extra="allow")

    n_general: int
    n_safety: list[int]
    val_size: int
    seed: int


class MixtureManifest(Manifest):
    """``manifest.json`` beside the mixtures (``safemix data build`` and the pipeline's data stage).

    Attributes:
        config_hash: :func:`mixture_config_hash` of the data settings and seed that built the mixtures: the same
            value whoever builds them (``safemix data build`` or ``safemix run``), so a run recognises mixtures
            built by the command as its own. None when the builder was given none (a library call).
        settings: the counts and seed of the mixtures.
        format: the safety examples' format (``instruction``, ``question`` or ``mixed``).
        sources: per role (``general``, ``safety``, ``safety_questions``): the source, its file and sha256, and
            the counts of examples read, dropped and usable.
        outputs: per written file: rows, sha256 and, for a mixture, its general and safety counts.
    """

    safemix_version: str
    versions: dict[str, str]
    config_hash: str | None
    settings: MixtureSettings
    format: str = "instruction"
    permutation: str
    sources: dict[str, dict[str, Any]]
    contamination_guard: dict[str, Any]
    outputs: dict[str, dict[str, Any]]


def mixture_config_hash(data: dict[str, Any], seed: int) -> str:
    """The ``config_hash`` of a :class:`MixtureManifest`: the settings that decide the mixtures of one seed.

    The first 12 hex digits of the sha256 of the canonical JSON of ``{"data": data, "seed": seed}``.

    Args:
        data: the resolved ``data`` section of the experiment config (``DataConfig.model_dump(mode="json")``).
        seed: the mixtures' seed.
    """
    return sha256_text(canonical_json({"data": data, "seed": seed}))[:MIXTURE_HASH_CHARS]


class TrainManifest(Manifest):
    """``manifest.json`` of a training run (``safemix train``): the run hash, settings, inputs and outputs."""

    safemix_version: str
    run_hash: str
    settings: dict[str, Any]
    inputs: dict[str, Any]
    outputs: dict[str, str]
    versions: dict[str, str]
    environment: dict[str, Any] | None


class GenerationSuite(BaseModel):
    """One suite of a :class:`GenerationManifest`; ``sha256`` is the suite file's once it is complete."""

    model_config = ConfigDict(extra="allow")

    file: str
    source: str
    source_sha256: dict[str, Any]
    prompts_sha256: str
    n_prompts: int
    categories: dict[str, int]
    duplicates_dropped: list[str] = Field(default_factory=list)
    complete: bool
    sha256: str | None = None


class GenerationManifest(Manifest):
    """``manifest.json`` of a generations directory (``safemix generate``).

    Attributes:
        settings: everything that decides the answers (model, adapter, template, decoding); ``model.name``
            names the model that wrote them.
        suites: per suite name, its prompts and whether its file is complete.
    """

    safemix_version: str
    settings: dict[str, Any]
    preset: str | None = None
    batch_size: int | None = None
    suites: dict[str, GenerationSuite]
    versions: dict[str, str]
    environment: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        """Every suite's file holds every answer."""
        return all(suite.complete for suite in self.suites.values())

    def model_name(self) -> str | None:
        """``settings.model.name``, plus ``+<adapter path>`` when an adapter was loaded; None when not recorded."""
        model, adapter = self.settings.get("model") or {}, self.settings.get("adapter") or {}
        name = model.get("name") if isinstance(model, dict) else None
        if not isinstance(name, str):
            return None
        return name + (f"+{adapter['path']}" if isinstance(adapter, dict) and adapter.get("path") else "")


class ScoreCounts(BaseModel):
    """How many items a scores file holds, and how many of them were scored."""

    model_config = ConfigDict(extra="allow")

    items: int
    scored: int
    unscored: int


class ScoreManifest(Manifest):
    """``<scorer>.manifest.json`` beside a scores file (``safemix score``).

    Attributes:
        scorer: the scorer's name; ``version`` and ``settings`` (the settings that change values) complete its
            identity.
        inputs: sha256 of every file read, by its name within the input.
        model: the name of the model that wrote the responses.
        output: the scores file's name.
    """

    scorer: str
    version: str
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    runtime_settings: dict[str, Any]
    inputs: dict[str, str]
    model: str | None
    output: str
    counts: ScoreCounts
    versions: dict[str, str]


class WinrateCounts(BaseModel):
    """The verdicts of one comparison."""

    model_config = ConfigDict(extra="allow")

    items: int
    wins: int
    ties: int
    losses: int
    unscored: int


class WinrateEstimate(BaseModel):
    """A win rate with its interval (None when no item was judged)."""

    model_config = ConfigDict(extra="allow")

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    interval: str


class WinrateManifest(Manifest):
    """``<suite>.manifest.json`` beside one pairwise comparison (``safemix winrate``).

    Attributes:
        identity: everything that decides the result lines (judge, template, seed, models, input sha256s); a
            comparison with the same identity is kept.
        n_a_shown_first: items where the measured model's answer was shown first.
    """

    safemix_version: str
    identity: dict[str, Any]
    files: dict[str, str]
    judge_runtime: dict[str, Any]
    n_a_shown_first: int
    counts: WinrateCounts
    win_rate: WinrateEstimate
    output: str
    versions: dict[str, str]


ManifestT = TypeVar("ManifestT", bound=Manifest)


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Write a manifest atomically as indented, key-sorted JSON."""
    write_json_atomic(path, manifest.to_json())


def read_manifest(path: Path, kind: type[ManifestT]) -> ManifestT:
    """Read and validate a manifest.

    Raises:
        InputError: the file is missing, not JSON, or not a manifest of this kind (naming the first bad key).
    """
    if not path.is_file():
        raise input_error(path, f"file not found (expected a {kind.__name__})")
    return _validated(kind, path)


def read_manifest_if_present(path: Path, kind: type[ManifestT]) -> ManifestT | None:
    """:func:`read_manifest`, or None when the file does not exist."""
    return read_manifest(path, kind) if path.is_file() else None


ModelT = TypeVar("ModelT", bound=BaseModel)


def _validated(kind: type[ModelT], path: Path) -> ModelT:
    try:
        return kind.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise input_error(path, first_problem(err)) from None
    except UnicodeDecodeError as err:
        raise input_error(path, f"not UTF-8 text ({err})") from None
