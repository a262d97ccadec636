"""The demo app: who the gateway says you are, an admins-only page, and endpoints the proxy tests need.

With UPSTREAM_DEMO_ALB_KEYS_URL set (the gateway's ``/oauth2/keys``) it also checks the signed ``x-amzn-oidc-data``
as an app written for an AWS ALB does (``alb``), and says whether the signature verified beside the identity.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, render_template_string, request

from .alb import AlbHeaderVerifier

# The headers cognito-gateway sets, in the order the page shows them.
IDENTITY_HEADERS = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Amzn-Oidc-Identity",
)
ADMIN_GROUP = "admins"
_CHUNK = 64 * 1024
_PATTERN = bytes(range(256)) * (_CHUNK // 256)  # the download body: deterministic, so tests can hash it
MAX_DOWNLOAD = 8 * 1024**3

_PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:720px;margin:40px auto;color:#16191f}
table{border-collapse:collapse}td,th{border:1px solid #d5dbdb;padding:6px 10px;text-align:left}
.denied{color:#b0090b}nav a{margin-right:14px}</style></head><body>
<nav><a href="/">Home</a><a href="/admin">Admins only</a><a href="/api/whoami">whoami (JSON)</a>
<a id=sign-out href="/oauth2/sign_out">Sign out</a></nav>
{% if denied %}<h1 class=denied>403: admins only</h1>
<p id=message>You are signed in as <b>{{ user or "nobody" }}</b>, who is not in the <code>{{ admin_group }}</code> group.</p>
{% else %}<h1>{{ title }}</h1>
{% if user %}<p id=greeting>Hello, <b id=user>{{ user }}</b>.</p>
{% else %}<p id=greeting>No identity headers arrived: this request did not come through the gateway.</p>{% endif %}
<p id=signed>x-amzn-oidc-data: <b>{{ signed_text }}</b>{% if signed_user %} (signed for <b>{{ signed_user }}</b>){% endif %}</p>
<h2>What the gateway says about you</h2><table id=identity>
{% for name, value in headers %}<tr><th>{{ name }}</th><td>{{ value if value is not none else "(not sent)" }}</td></tr>
{% endfor %}</table>{% endif %}</body></html>"""


def _identity() -> list[tuple[str, str | None]]:
    return [(name, request.headers.get(name)) for name in IDENTITY_HEADERS]


def _groups() -> list[str]:
    return [g for g in request.headers.get("X-Forwarded-Groups", "").split(",") if g]


_FORM_PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8><title>Form</title></head><body>
<form method=post action="/api/form"><input name=title id=title><textarea name=note id=note></textarea>
<button type=submit id=send>Send</button></form></body></html>"""


def _signed(verifier: AlbHeaderVerifier | None) -> tuple[str, dict | None]:
    """What became of the request's x-amzn-oidc-data: "verified" (with its claims), "absent", "not checked", or
    why it is not valid."""
    token = request.headers.get("X-Amzn-Oidc-Data")
    if token is None:
        return "absent", None
    if verifier is None:
        return "not checked (UPSTREAM_DEMO_ALB_KEYS_URL is not set)", None
    return verifier.verify(token)


def create_app(alb: AlbHeaderVerifier | None = None) -> Flask:
    """``alb``: checks x-amzn-oidc-data; None shows it as not checked."""
    app = Flask("upstream_demo")

    @app.get("/")
    def home() -> str:
        signed, claims = _signed(alb)
        return render_template_string(
            _PAGE,
            title="upstream_demo",
            user=request.headers.get("X-Forwarded-User"),
            headers=_identity(),
            signed_text="signature verified" if signed == "verified" else signed,
            signed_user=(claims or {}).get("username"),
        )

    @app.get("/admin")
    def admin() -> tuple[str, int] | str:
        user = request.headers.get("X-Forwarded-User")
        if ADMIN_GROUP not in _groups():
            page = render_template_string(_PAGE, title="Forbidden", denied=True, user=user, admin_group=ADMIN_GROUP)
            return page, 403
        return render_template_string(_PAGE, title="Admins only", user=user, headers=_identity())

    @app.route("/api/whoami", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def whoami() -> Response:
        """Every header this request arrived with, and what became of x-amzn-oidc-data, for tests and for curious
        people."""
        return jsonify(
            signed=_signed(alb)[0],
            method=request.method,
            path=request.full_path if request.query_string else request.path,
            raw_uri=request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI"),
            headers=[[k, v] for k, v in request.headers.items()],
        )

    @app.post("/api/upload")
    def upload() -> Response:
        """Read the body in chunks (never whole) and report its size and SHA-256."""
        digest, size = hashlib.sha256(), 0
        stream = request.stream
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return jsonify(size=size, sha256=digest.hexdigest())

    @app.get("/api/download")
    def download() -> Response | tuple[Response, int]:
        """Stream ``size`` bytes of a repeating 0..255 pattern."""
        try:
            size = int(request.args.get("size", str(1024**2)))
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_DOWNLOAD:
            return jsonify(error=f"size must be between 0 and {MAX_DOWNLOAD}"), 400

        def body() -> Iterator[bytes]:
            remaining = size
            while remaining > 0:
                piece = _PATTERN[: min(remaining, _CHUNK)]
                remaining -= len(piece)
                yield piece

        return Response(body(), mimetype="application/octet-stream", headers={"Content-Length": str(size)})

    @app.route("/api/echo/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def echo(rest: str) -> Response:
        """The request line as it arrived, for tests that check the gateway forwards paths byte for byte."""
        return whoami()

    @app.get("/api/gzip")
    def pre_compressed() -> Response:
        """A gzip body with Content-Encoding: gzip, to show the gateway passes it on undecoded."""
        body = gzip.compress(b"compressed hello " * 100)
        return Response(body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    @app.get("/api/slow")
    def slow() -> Response:
        """Answers after ``seconds`` (at most 30), for timeout tests."""
        try:
            seconds = min(float(request.args.get("seconds", "1")), 30.0)
        except ValueError:
            seconds = 1.0
        time.sleep(max(seconds, 0.0))
        return jsonify(slept=seconds)

    @app.get("/api/redirect")
    def redirect_elsewhere() -> Response:
        response = Response(status=302, headers={"Location": "/somewhere-else"})
        response.set_cookie("app_cookie", "one", httponly=True)
        response.headers.add("Set-Cookie", "app_other=two; Path=/")
        return response

    @app.get("/form")
    def form_page() -> str:
        """A form that posts to /api/form: the page a person fills in while their session runs out."""
        return render_template_string(_FORM_PAGE)

    @app.post("/api/form")
    def form_echo() -> Response:
        """The posted form fields, for the test that a form sent on an expired session is not lost."""
        return jsonify(method=request.method, fields=[[k, v] for k, v in request.form.items(multi=True)])

    @app.get("/api/set-cookie")
    def set_cookie() -> Response:
        """Sets every cookie named in ``name`` (repeatable), for the test that the gateway drops its own names."""
        response = jsonify(set=request.args.getlist("name"))
        for name in request.args.getlist("name"):
            response.headers.add("Set-Cookie", f"{name}=from-the-upstream; Path=/")
        return response

    return app
