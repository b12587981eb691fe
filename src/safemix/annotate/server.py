"""The annotation web app: Flask, server-rendered pages, a little inline script for keyboard shortcuts.

Pages: ``GET /`` asks for the annotator's name (kept in a cookie), then shows their next unjudged item, or a
"done" page. ``POST /judge`` stores a judgement and redirects to the next item, ``POST /undo`` retracts the
annotator's latest judgement and shows that item again with its labels filled in, ``POST /annotator`` and
``POST /switch`` set and clear the name.

Safety: Jinja autoescaping is on for every template (answers are hostile text), and a Content-Security-Policy
allows only this request's inline script, so even a missed escape could not run a script. Every POST carries the
study's form key (a cross-site page cannot read it, so it cannot forge a judgement). With a token, every request
must carry it: as ``?token=`` once (then a cookie), the ``X-Safemix-Token`` header, or through the token page.
Bad input gets a 4xx page that says what is wrong: 400 bad or missing labels, an over-long note, an unexpected
field; 401 no token; 403 a foreign form; 404 an unknown item; 409 an item already judged.
"""

from __future__ import annotations

import errno
import hmac
import logging
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, redirect, render_template, request
from werkzeug.serving import BaseWSGIServer, make_server

from safemix.annotate.labels import (
    CHOICE_VALUES,
    HARMFUL_VALUES,
    MAX_NOTE_CHARS,
    QUALITY_VALUES,
    REFUSAL_VALUES,
    AnswerLabels,
    Judgement,
    PairChoice,
    slot_letter,
    slot_pairs,
    valid_annotator,
)
from safemix.annotate.store import AlreadyJudged, Item, Study
from safemix.errors import InputError

log = logging.getLogger(__name__)

ANNOTATOR_COOKIE = "safemix-annotator"
TOKEN_HEADER = "X-Safemix-Token"
_MAX_REQUEST_BYTES = 256 * 1024
_LABEL_FIELDS: dict[str, tuple[str, ...]] = {"quality": QUALITY_VALUES, "refusal": REFUSAL_VALUES,
                                             "harmful": HARMFUL_VALUES}


class RequestProblem(Exception):
    """A bad request: rendered as a page with this HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(study: Study, token: str | None = None) -> Flask:
    """The Flask app serving one study.

    Args:
        study: the study database.
        token: when set, every request must present it (query ``token``, cookie, or ``X-Safemix-Token`` header).
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = _MAX_REQUEST_BYTES
    form_key = str(study.metadata()["form_key"])
    token_cookie = f"safemix-token-{form_key[:8]}"  # one per study: studies on other ports keep their own

    @app.before_request
    def _check_token() -> Any:
        g.nonce = secrets.token_urlsafe(16)
        if token is None or request.endpoint == "enter_token":
            return None
        for given in (request.args.get("token"), request.headers.get(TOKEN_HEADER), request.cookies.get(token_cookie)):
            if given and hmac.compare_digest(given.encode(), token.encode()):
                g.remember_token = given == request.args.get("token")
                return None
        return _page("token.html", 401, wrong=bool(request.args.get("token")))

    @app.after_request
    def _headers(response: Response) -> Response:
        nonce = g.get("nonce", "")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if token is not None and g.get("remember_token"):
            response.set_cookie(token_cookie, token, httponly=True, samesite="Lax")
        return response

    @app.errorhandler(RequestProblem)
    def _problem(problem: RequestProblem) -> Any:
        return _page("error.html", problem.status, message=problem.message)

    @app.post("/token")
    def enter_token() -> Any:
        given = request.form.get("token", "")
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return _page("token.html", 401, wrong=True)
        response = redirect("/", 303)
        response.set_cookie(token_cookie, token, httponly=True, samesite="Lax")
        return response

    @app.get("/")
    def index() -> Any:
        annotator = _annotator()
        if annotator is None:
            return _page("name.html", 200, form_key=form_key)
        done, total = study.progress(annotator)
        item = study.next_item(annotator)
        if item is None:
            return _page("done.html", 200, annotator=annotator, done=done, total=total, form_key=form_key)
        retracted = study.retracted(annotator, item.id)
        return _page("item.html", 200, item=item, pairs=slot_pairs(len(item.answers)), annotator=annotator,
                     done=done, total=total, form_key=form_key, max_note=MAX_NOTE_CHARS,
                     values=_form_values(retracted) if retracted else {}, letter=slot_letter)

    @app.post("/annotator")
    def choose_annotator() -> Any:
        _check_form_key(form_key)
        name = request.form.get("annotator", "").strip()
        if not valid_annotator(name):
            raise RequestProblem(400, f"annotator name {name!r}: use 1-40 letters, digits, dots, underscores or "
                                      "hyphens, starting with a letter or digit")
        response = redirect("/", 303)
        response.set_cookie(ANNOTATOR_COOKIE, name, samesite="Lax", max_age=365 * 24 * 3600)
        return response

    @app.post("/switch")
    def switch_annotator() -> Any:
        _check_form_key(form_key)
        response = redirect("/", 303)
        response.delete_cookie(ANNOTATOR_COOKIE)
        return response

    @app.post("/judge")
    def judge() -> Any:
        _check_form_key(form_key)
        annotator = _require_annotator()
        item_id = request.form.get("item", "")
        try:
            item = study.item(item_id)
        except KeyError:
            raise RequestProblem(404, f"unknown item id {item_id!r}") from None
        judgement = parse_judgement(request.form, item)
        try:
            study.submit(annotator, judgement)
        except AlreadyJudged:
            raise RequestProblem(409, f"item {item_id!r} is already judged by {annotator}; use undo to change "
                                      "the latest judgement") from None
        log.info("%s judged item %s", annotator, item_id)
        return redirect("/", 303)

    @app.post("/undo")
    def undo() -> Any:
        _check_form_key(form_key)
        annotator = _require_annotator()
        item_id = study.undo(annotator)
        if item_id is None:
            raise RequestProblem(409, f"{annotator} has no judgement to undo")
        log.info("%s retracted the judgement of item %s", annotator, item_id)
        return redirect("/", 303)

    return app


def _page(template: str, status: int, **context: Any) -> tuple[str, int]:
    return render_template(template, **context), status


def _annotator() -> str | None:
    name = request.cookies.get(ANNOTATOR_COOKIE, "")
    return name if valid_annotator(name) else None


def _require_annotator() -> str:
    annotator = _annotator()
    if annotator is None:
        raise RequestProblem(400, "no annotator name: open the start page and enter your name first")
    return annotator


def _check_form_key(form_key: str) -> None:
    given = request.form.get("form_key", "")
    if not hmac.compare_digest(given.encode(), form_key.encode()):
        raise RequestProblem(403, "this form does not come from this study's pages; reload the page and try again")


def parse_judgement(form: Mapping[str, str], item: Item) -> Judgement:
    """Validate a submitted form against the item's answers and turn it into a judgement.

    Raises:
        RequestProblem: (400) a missing or unknown label value, a note over ``MAX_NOTE_CHARS``, or an unexpected field.
    """
    letters = [answer.letter for answer in item.answers]
    pairs = slot_pairs(len(letters))
    expected = {"form_key", "item"} | {f"{field}-{letter}" for letter in letters for field in (*_LABEL_FIELDS, "note")}
    expected |= {f"prefer-{letters[a]}-{letters[b]}" for a, b in pairs}
    unexpected = sorted(set(form) - expected)
    if unexpected:
        raise RequestProblem(400, f"unexpected field {unexpected[0]!r} for item {item.id!r}")
    answers = tuple(_answer_labels(form, slot, letter) for slot, letter in enumerate(letters))
    preferences = tuple(_pair_choice(form, a, b) for a, b in pairs)
    return Judgement(item.id, answers, preferences)


def _choice(form: Mapping[str, str], name: str, allowed: tuple[str, ...], what: str) -> str:
    value = form.get(name)
    if value is None or value == "":
        raise RequestProblem(400, f"{what} is missing")
    if value not in allowed:
        raise RequestProblem(400, f"{what} must be one of {', '.join(allowed)} (got {value[:40]!r})")
    return value


def _answer_labels(form: Mapping[str, str], slot: int, letter: str) -> AnswerLabels:
    values = {field: _choice(form, f"{field}-{letter}", allowed, f"answer {letter}: {field}")
              for field, allowed in _LABEL_FIELDS.items()}
    note = form.get(f"note-{letter}", "").replace("\r\n", "\n").strip()
    if len(note) > MAX_NOTE_CHARS:
        raise RequestProblem(400, f"answer {letter}: the note has {len(note)} characters; at most {MAX_NOTE_CHARS}")
    return AnswerLabels(slot, values["quality"], values["refusal"], values["harmful"], note)  # type: ignore[arg-type]


def _pair_choice(form: Mapping[str, str], first: int, second: int) -> PairChoice:
    a, b = slot_letter(first), slot_letter(second)
    value = _choice(form, f"prefer-{a}-{b}", (a, b, "tie"), f"preference {a} vs {b}")
    choice = dict(zip((a, b, "tie"), CHOICE_VALUES, strict=True))[value]
    return PairChoice(first, second, choice)  # type: ignore[arg-type]


def _form_values(judgement: Judgement) -> dict[str, str]:
    """A retracted judgement as form field values, to pre-fill the form after an undo."""
    values: dict[str, str] = {}
    for answer in judgement.answers:
        letter = slot_letter(answer.slot)
        values.update({f"quality-{letter}": answer.quality, f"refusal-{letter}": answer.refusal,
                       f"harmful-{letter}": answer.harmful, f"note-{letter}": answer.note})
    for pair in judgement.preferences:
        a, b = slot_letter(pair.first_slot), slot_letter(pair.second_slot)
        values[f"prefer-{a}-{b}"] = {"first": a, "second": b, "tie": "tie"}[pair.choice]
    return values


def bind_server(app: Flask, host: str, port: int) -> BaseWSGIServer:
    """Listen on ``host:port`` (port 0: any free port; the server's ``port`` tells which) with a threaded server.

    The socket is bound here, not by werkzeug, whose bind failure prints and calls ``sys.exit(1)``.

    Raises:
        InputError: the port is in use, or the host cannot be listened on.
    """
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise InputError(f"--host {host}: {err.strerror}") from None
    listener = socket.socket(family, kind)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as err:
        listener.close()
        in_use = err.errno == errno.EADDRINUSE
        problem = "is in use; choose another --port" if in_use else f"cannot be used ({err.strerror})"
        raise InputError(f"--port {port}: {host}:{port} {problem}") from None
    listener.listen(128)
    try:
        return make_server(host, port, app, threaded=True, fd=listener.fileno())
    finally:
        listener.close()  # the server works on its own duplicate of the socket


def run_server(server: BaseWSGIServer) -> None:
    """Serve requests until Ctrl+C; every acknowledged judgement is already committed when it stops."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # its access log would show ?token= query strings
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
