"""The source catalog: every mirrored source reads to its recorded size; fetch verifies sha256."""

from __future__ import annotations

import hashlib
import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest

from safemix.data import catalog
from safemix.data.catalog import (
    CatalogSource,
    Origin,
    fetch,
    get_source,
    load_catalog,
    locate,
)
from safemix.data.readers import read_rows
from safemix.data.sources import SourceSpec, load_catalog_prompts, load_instructions
from safemix.errors import InputError
from tests.conftest import serving

REQUIRED = [
    "paper-safety", "i-malicious-instructions", "i-cona", "i-controversial", "q-harm", "i-physical-safety-unsafe",
    "i-physical-safety-safe", "i-alpaca", "xstest", "alpaca-cleaned", "advbench", "harmbench-val", "harmbench-test",
    "strongreject", "safetext", "piqa", "boolq", "openbookqa", "llamafactory-alpaca-en-demo",
]


def test_catalog_has_the_required_sources_with_origins() -> None:
    sources = load_catalog()
    assert set(REQUIRED) <= set(sources)
    for name, source in sources.items():
        assert source.name == name
        assert source.origin.download_url.startswith("package:" if source.origin.package else "https://")
        pinned = source.origin.url or ""
        assert "raw.githubusercontent.com" not in pinned or len(pinned.split("/")[5]) == 40, name  # commit, not branch
        assert source.sha256 is not None or name == "alpaca-cleaned", name


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(InputError, match=r"unknown catalog source 'xtest'; did you mean xstest"):
        get_source("xtest")


@pytest.mark.parametrize("name", [n for n, s in load_catalog().items() if s.kind == "instructions" and s.sha256])
def test_instruction_sources_read_to_their_row_count(name: str, data_dir: Path) -> None:
    loaded = load_instructions(SourceSpec(name=name), data_dir)
    assert len(loaded.records) == get_source(name).rows
    assert loaded.sha256 == get_source(name).sha256


@pytest.mark.parametrize("name", [n for n, s in load_catalog().items() if s.kind == "prompts"])
def test_prompt_suites_read_to_their_row_count(name: str, data_dir: Path) -> None:
    prompts = load_catalog_prompts(name, data_dir)
    source = get_source(name)
    assert len(prompts) == source.rows
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.category for p in prompts)


@pytest.mark.parametrize("name", [n for n, s in load_catalog().items() if s.kind in ("labelled-completions", "multiple-choice")])
def test_other_sources_parse_to_their_row_count(name: str, data_dir: Path) -> None:
    source = get_source(name)
    rows = read_rows(locate(name, data_dir), "auto")
    assert len(rows) == source.rows
    for column in source.columns.values():
        assert column in rows[0].values


def test_checksum_mismatch_in_the_data_dir_is_an_error(tmp_path: Path) -> None:
    source = get_source("i-alpaca")
    fake = tmp_path / source.mirror_path
    fake.parent.mkdir(parents=True)
    fake.write_text('{"instructions": ["tampered"]}')
    with pytest.raises(InputError, match=r"sha256 mismatch for source 'i-alpaca': expected [0-9a-f]{64}, got"):
        locate("i-alpaca", tmp_path)


def test_missing_source_offline_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"source 'alpaca-cleaned' is not in the data directory .* run 'safemix data fetch alpaca-cleaned' online"):
        locate("alpaca-cleaned", tmp_path)


class _Server(http.server.ThreadingHTTPServer):
    """Serves files from ``root`` on 127.0.0.1 and records the paths asked for."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "suite.json").write_text('{"instructions": ["Say hi."]}')
    with serving(_Server(root)) as served:
        yield served


def _source(url: str, sha256: str | None) -> CatalogSource:
    return CatalogSource(name="tiny", description="d", kind="prompts", format="eval-json", category="general",
                         mirror_path="tiny/suite.json", origin=Origin(url=url), sha256=sha256, license="MIT", rows=1)


def test_fetch_downloads_into_the_cache_and_verifies(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"instructions": ["Say hi."]}'
    source = _source(f"{server.url}/suite.json", hashlib.sha256(body).hexdigest())
    path = fetch(source)
    assert path == catalog.cache_dir() / "tiny" / "suite.json"
    assert path.read_bytes() == body
    monkeypatch.setattr(catalog, "load_catalog", lambda: {"tiny": source})
    monkeypatch.delenv("SAFEMIX_OFFLINE")
    assert locate("tiny", None) == path  # already cached: no second download
    assert server.requests == ["/suite.json"]


def test_fetch_with_wrong_checksum_keeps_nothing(server: _Server) -> None:
    source = _source(f"{server.url}/suite.json", "0" * 64)
    with pytest.raises(InputError, match="sha256 mismatch for source 'tiny'"):
        fetch(source)
    assert not (catalog.cache_dir() / "tiny" / "suite.json").exists()


def test_fetch_failure_is_one_clear_line(server: _Server) -> None:
    with pytest.raises(InputError, match=r"/missing.json: download of source 'tiny' failed: HTTP Error 404"):
        fetch(_source(f"{server.url}/missing.json", None))
