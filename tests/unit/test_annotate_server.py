"""The annotation app through Flask's test client: escaping, blinding, validation (4xx), token, port in use."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from safemix.annotate.labels import MAX_NOTE_CHARS
from safemix.annotate.server import bind_server, create_app
from safemix.annotate.store import Study, open_study
from safemix.errors import InputError
from tests.conftest import run_cli
from tests.unit.annotate_data import HOSTILE, write_generations


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    a = write_generations(tmp_path / "model-one" / "x.jsonl", [("p1", "x", "harmful", f"Prompt {HOSTILE}", HOSTILE),
                                                               ("p2", "x", "safe", "Second prompt", "fine")])
    b = write_generations(tmp_path / "model-two" / "x.jsonl", [("p1", "x", "harmful", f"Prompt {HOSTILE}", "no"),
                                                               ("p2", "x", "safe", "Second prompt", "")])
    return open_study(tmp_path / "studies", "secret-name", [a, b])


def _client(study: Study, annotator: str | None = "ann", token: str | None = None) -> FlaskClient:
    client = create_app(study, token).test_client()
    if annotator:
        client.set_cookie("safemix-annotator", annotator)
    return client


def _form(study: Study, item_id: str, **changes: str) -> dict[str, str]:
    form = {"form_key": study.metadata()["form_key"], "item": item_id, "prefer-A-B": "tie"}
    for letter in "AB":
        form.update({f"quality-{letter}": "good", f"refusal-{letter}": "none", f"harmful-{letter}": "no",
                     f"note-{letter}": ""})
    form.update(changes)
    return form


def test_hostile_answers_and_prompts_render_as_text(study: Study) -> None:
    page = _client(study).get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>not bold" not in html
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    # the only script is the page's own, allowed by this response's nonce
    nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["Content-Security-Policy"]).group(1)
    assert re.findall(r"<script[^>]*>", html) == [f'<script nonce="{nonce}">']


def test_the_page_never_names_the_models_or_the_study(study: Study) -> None:
    client = _client(study)
    pages = [client.get("/").get_data(as_text=True)]
    client.post("/judge", data=_form(study, "p1" if "p1" in pages[0] else "p2"))
    pages.append(client.get("/").get_data(as_text=True))
    for html in pages:
        assert "model-one" not in html and "model-two" not in html and "secret-name" not in html
    assert "(empty answer)" in pages[0] + pages[1]


def test_a_judgement_is_stored_and_the_next_item_shown(study: Study) -> None:
    client = _client(study)
    first, second = (item_id for item_id, _, _ in study.items())
    response = client.post("/judge", data=_form(study, first, **{"note-A": "  looks fine\r\nreally  "}))
    assert response.status_code == 303 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert f'name="item" value="{second}"' in page and "1 / 2 judged" in page
    assert [row.note for row in study.answer_rows() if row.slot == "A"] == ["looks fine\nreally"]


@pytest.mark.parametrize(("changes", "status", "message"), [
    ({"item": "nope"}, 404, "unknown item id &#39;nope&#39;"),
    ({"quality-A": "great"}, 400, "answer A: quality must be one of good, bad (got &#39;great&#39;)"),
    ({"refusal-B": ""}, 400, "answer B: refusal is missing"),
    ({"prefer-A-B": "C"}, 400, "preference A vs B must be one of A, B, tie"),
    ({"note-B": "x" * (MAX_NOTE_CHARS + 1)}, 400, f"answer B: the note has {MAX_NOTE_CHARS + 1} characters; at most"),
    ({"model": "m1"}, 400, "unexpected field &#39;model&#39;"),
    ({"form_key": "forged"}, 403, "this form does not come from this study"),
])
def test_bad_submissions_get_a_clear_4xx(study: Study, changes: dict[str, str], status: int, message: str) -> None:
    first = study.items()[0][0]
    response = _client(study).post("/judge", data=_form(study, first, **changes))
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert study.answer_rows() == []


def test_a_repeated_submission_is_a_conflict_and_undo_reopens_the_item_filled_in(study: Study) -> None:
    client = _client(study)
    first = study.items()[0][0]
    assert client.post("/judge", data=_form(study, first, **{"quality-B": "bad"})).status_code == 303
    again = client.post("/judge", data=_form(study, first))
    assert again.status_code == 409 and "already judged by ann; use undo" in again.get_data(as_text=True)
    assert client.post("/undo", data={"form_key": study.metadata()["form_key"]}).status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert f'value="{first}"' in page and "0 / 2 judged" in page
    assert re.search(r'name="quality-B" value="bad" required checked', page)
    nothing = client.post("/undo", data={"form_key": study.metadata()["form_key"]})
    assert nothing.status_code == 409 and "ann has no judgement to undo" in nothing.get_data(as_text=True)


def test_annotator_names_are_required_and_checked(study: Study) -> None:
    client = _client(study, annotator=None)
    assert "Who is annotating?" in client.get("/").get_data(as_text=True)
    no_name = client.post("/judge", data=_form(study, study.items()[0][0]))
    assert no_name.status_code == 400 and "no annotator name" in no_name.get_data(as_text=True)
    bad = client.post("/annotator", data={"form_key": study.metadata()["form_key"], "annotator": "<b>x</b>"})
    assert bad.status_code == 400
    assert "annotator name &#39;&lt;b&gt;x&lt;/b&gt;&#39;: use 1-40" in bad.get_data(as_text=True)
    good = client.post("/annotator", data={"form_key": study.metadata()["form_key"], "annotator": "ann.b"})
    assert good.status_code == 303 and "safemix-annotator=ann.b" in good.headers["Set-Cookie"]


def test_with_a_token_every_request_needs_it(study: Study) -> None:
    client = _client(study, token="s3cret")
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.post("/judge", data=_form(study, study.items()[0][0])).status_code == 401
    assert client.get("/", headers={"X-Safemix-Token": "s3cret"}).status_code == 200
    assert client.get("/?token=s3cret").status_code == 200  # and now a cookie carries it
    assert client.get("/").status_code == 200
    fresh = _client(study, token="s3cret")
    assert fresh.post("/token", data={"token": "nope"}).status_code == 401
    assert fresh.post("/token", data={"token": "s3cret"}).status_code == 303
    assert fresh.get("/").status_code == 200


def test_a_port_in_use_is_an_input_error(study: Study) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"--port {port}: 127.0.0.1:{port} is in use; choose another --port"):
            bind_server(create_app(study), "127.0.0.1", port)
        result = run_cli("annotate", "serve", "--study", "secret-name", "--studies-dir", str(study.path.parent),
                         "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == f"safemix: error: --port {port}: 127.0.0.1:{port} is in use; choose another --port\n"
