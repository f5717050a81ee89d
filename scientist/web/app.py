"""`scientist serve`: a small Flask app to watch runs, read variants and work through the
approval queue. Pages are rendered on the server (jinja2); the live parts are HTML
fragments a few lines of JavaScript fetch every few seconds. No build step, no CDN.

Security (the page can approve code that then runs on the machine's GPUs):
- it binds 127.0.0.1 unless told otherwise;
- a random token, printed at start, is needed for every request that changes state. The
  printed address carries it once (`/?token=…`); the app then keeps it in an HttpOnly,
  SameSite=Strict cookie and puts it in each form. A POST must carry it in the form (or an
  `X-Scientist-Token` header), so a page of another site cannot make one: it can neither
  read the token nor send the cookie. A POST whose Origin is not this server is refused;
- a request whose Host is not one this server answers to is refused (DNS rebinding);
- files of a run are reached through fixed routes only (a run's name, a variant's number,
  a seed's number, a log's name from a fixed list): no path from the request reaches the
  filesystem. Logs, events and reasons are redacted again before they are shown; the
  run's secret seed, its LLM transcript and cache are never served;
- pages set a Content-Security-Policy without inline scripts, no framing, no referrer to
  other sites.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

from scientist import approvals
from scientist.errors import ScientistError
from scientist.gate import APPROVE, REJECT
from scientist.web import charts
from scientist.web import data as d

COOKIE = "scientist_token"
HEADER = "X-Scientist-Token"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              "frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
POLL_MS = 2000


def create_app(runs_dir: Path, token: str | None = None, hosts: tuple[str, ...] = LOOPBACK,
               poll_ms: int = POLL_MS) -> Flask:
    """The app over the run folders in `runs_dir`. `hosts`: the Host names it answers to
    (empty: any, for a server bound to all interfaces)."""
    app = Flask(__name__)
    app.config.update(RUNS=Path(runs_dir), TOKEN=token or secrets.token_urlsafe(24),
                      HOSTS=tuple(h.lower() for h in hosts), POLL_MS=poll_ms)
    formatter = HtmlFormatter(cssclass="diff", nowrap=False)
    pygments_css = formatter.get_style_defs(".diff")

    def runs_base() -> Path:
        return app.config["RUNS"]

    def folder(name: str) -> Path:
        try:
            return d.run_folder(runs_base(), name)
        except d.NotFound:
            abort(404, f"no run {name!r}")

    def authorised() -> bool:
        given = request.headers.get(HEADER) or request.form.get("token") or ""
        return hmac.compare_digest(given.encode(), app.config["TOKEN"].encode())

    def has_cookie() -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, "").encode(),
                                   app.config["TOKEN"].encode())

    @app.before_request
    def guard() -> Any:
        host = _hostname(request.host or "")
        if app.config["HOSTS"] and host not in app.config["HOSTS"]:
            abort(400, f"this server does not answer to the host {host!r}")
        given = request.args.get("token")
        if given is not None and request.method == "GET":  # the printed address: keep it
            if not hmac.compare_digest(given.encode(), app.config["TOKEN"].encode()):
                abort(403, "wrong token: open the address `scientist serve` printed")
            args = {k: v for k, v in request.args.items() if k != "token"}
            resp = redirect(url_for(request.endpoint, **(request.view_args or {}), **args)
                            if request.endpoint else "/", code=303)
            resp.set_cookie(COOKIE, app.config["TOKEN"], httponly=True, samesite="Strict",
                            secure=request.is_secure, path="/")
            return resp
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != request.host_url.rstrip("/"):
                abort(403, "a request from another site's page is refused")
            if not authorised():
                abort(403, "this needs the token `scientist serve` printed: open the address "
                           "it printed (…/?token=…) in this browser")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"  # (no-referrer makes a form's Origin "null")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(409)
    def error(e: Any) -> tuple[str, int]:
        return render_template("error.html", code=e.code, message=e.description), e.code

    @app.context_processor
    def common() -> dict[str, Any]:
        return dict(token=app.config["TOKEN"] if has_cookie() else None,
                    poll_ms=app.config["POLL_MS"], fmt_time=_time, fmt_num=_num,
                    fmt_delta=_delta)

    # --- pages ---------------------------------------------------------------------------
    @app.get("/")
    def index() -> str:
        return render_template("runs.html", runs=d.runs(runs_base()), base=runs_base())

    def unchanged(dirs: list[Path], part: str) -> tuple[bool, str]:
        """Whether the browser's copy of a live fragment is current (If-None-Match)."""
        tag = f'"{part}-{d.version(dirs)}"'
        return tag in request.headers.get("If-None-Match", ""), tag

    def fragment(tag: str, html: str) -> Response:
        resp = Response(html, mimetype="text/html")
        resp.headers["ETag"] = tag
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @app.get("/fragment/runs")
    def runs_fragment() -> Response:
        same, tag = unchanged(d.all_runs(runs_base()), "runs")
        if same:
            return Response(status=304, headers={"ETag": tag})
        return fragment(tag, render_template("_runs_table.html", runs=d.runs(runs_base())))

    @app.get("/runs/<name>")
    def run_page(name: str) -> str:
        return render_template("run.html", **_run_context(folder(name)))

    @app.get("/runs/<name>/fragment/<part>")
    def run_fragment(name: str, part: str) -> Response:
        if part not in ("summary", "charts", "variants", "events", "queue"):
            abort(404)
        run_dir = folder(name)
        same, tag = unchanged([run_dir], part)
        if same:
            return Response(status=304, headers={"ETag": tag})
        return fragment(tag, render_template(f"_run_{part}.html", **_run_context(run_dir)))

    def _run_context(run_dir: Path) -> dict[str, Any]:
        r = d.run(run_dir)
        r["fitness_svg"] = charts.fitness(r["variants"], r["promoted"], r["summary"]["metric"],
                                          run_dir.name)
        r["lineage_svg"] = charts.lineage(r["variants"], r["summary"]["best_id"], run_dir.name)
        return r

    @app.get("/runs/<name>/variants/<int:vid>")
    def variant_page(name: str, vid: int) -> str:
        try:
            r = d.variant(folder(name), vid)
        except d.NotFound:
            abort(404, f"no variant {vid} in {name}")
        r["diff_html"] = (Markup(highlight(r["v"]["diff"], DiffLexer(), formatter))
                          if r["v"]["diff"] else None)
        return render_template("variant.html", **r)

    @app.get("/runs/<name>/variants/<int:vid>/seeds/<int:seed>/<log>")
    def log_page(name: str, vid: int, seed: int, log: str) -> Response:
        try:
            text = d.log_file(folder(name), vid, seed, log)
        except d.NotFound:
            abort(404, f"no log {log!r} of training seed {seed} of v{vid:04d}")
        return Response(text, mimetype="text/plain")

    @app.get("/runs/<name>/report.<kind>")
    def report(name: str, kind: str) -> Response:
        run_dir = folder(name)
        if kind not in d.REPORTS:
            abort(404)
        rel, mime = d.REPORTS[kind]
        path = run_dir / rel
        if not path.is_file() or path.is_symlink():
            abort(404, f"{name} has no report.{kind} (yet): `scientist report {name}` writes it")
        resp = Response(path.read_bytes(), mimetype=mime.split(";")[0])
        if ";" in mime:
            resp.headers["Content-Type"] = mime
        if kind == "html":
            resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    def pending_of(name: str | None) -> list[tuple[str, approvals.Request, Markup | None]]:
        names = [name] if name else [r.name for r in d.all_runs(runs_base())
                                     if d.RUN_NAME.match(r.name)]
        out = []
        for n in names:
            run_dir = folder(n)
            out += [(n, req, _diff(req.diff)) for req in d.pending(run_dir)]
        return out

    @app.get("/approvals")
    def queue_all() -> str:
        return render_template("approvals.html", pending=pending_of(None), run=None,
                               done=request.args.get("done"))

    @app.get("/fragment/approvals")
    def queue_all_fragment() -> str:
        return render_template("_queue.html", pending=pending_of(None), run=None)

    @app.get("/runs/<name>/approvals")
    def queue_run(name: str) -> str:
        return render_template("approvals.html", pending=pending_of(name), run=name,
                               done=request.args.get("done"))

    @app.get("/runs/<name>/fragment/approvals")
    def queue_run_fragment(name: str) -> str:
        return render_template("_queue.html", pending=pending_of(name), run=name)

    @app.post("/runs/<name>/approvals/<int:vid>")
    def decide(name: str, vid: int) -> Any:
        run_dir = folder(name)
        action = request.form.get("action", "")
        if action not in (APPROVE, REJECT):
            abort(400, "the decision must be approve or reject")
        try:
            approvals.decide(run_dir, vid, request.form.get("digest", ""), action,
                             request.form.get("reason", ""), by=request.remote_addr or "")
        except approvals.NoSuchRequest as e:
            abort(409, str(e))
        except approvals.AlreadyDecided as e:
            abort(409, str(e))
        except ScientistError as e:
            abort(400, str(e))
        back = request.form.get("back")
        target = (url_for("queue_all") if back == "all" else url_for("queue_run", name=name))
        done = {APPROVE: "approved", REJECT: "rejected"}[action]
        return redirect(f"{target}?done={done}+v{vid:04d}", code=303)

    @app.get("/pygments.css")
    def pygments() -> Response:
        return Response(pygments_css, mimetype="text/css",
                        headers={"Cache-Control": "max-age=3600"})

    def _diff(text: str) -> Markup | None:
        return Markup(highlight(text, DiffLexer(), formatter)) if text else None

    return app


def _hostname(host: str) -> str:
    """The name in a Host header, without its port: `[::1]:8765` -> `[::1]`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _time(epoch: float | None) -> str:
    if not epoch:
        return "—"
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _delta(x: float | None) -> str:
    return "—" if x is None else f"{x:+.4f}"


def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          allow_hosts: tuple[str, ...] = (), out: Any = None, ready: Any = None) -> None:
    """Run the app until interrupted; print the address with its token first."""
    from werkzeug.serving import make_server

    # one line per request, five fragments every 2 s per open page: only problems are logged
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    out = out or sys.stdout
    token = token or secrets.token_urlsafe(24)
    wildcard = host in ("0.0.0.0", "::", "")
    hosts = () if wildcard else tuple(dict.fromkeys((*LOOPBACK, host.lower(), *allow_hosts)))
    app = create_app(runs_dir, token, hosts)
    server = make_server(host, port, app, threaded=True)
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if wildcard else host)
    url = f"http://{shown}:{server.server_port}/"
    print(f"scientist serve: runs in {Path(runs_dir).resolve()}", file=out)
    print(f"  open {url}?token={token}", file=out)
    print(f"  (the token is needed to approve or reject; anyone with the address can read the runs"
          f"{' — bound to all interfaces: anyone who can reach this port' if wildcard else ''})",
          file=out, flush=True)
    if ready is not None:
        ready(server.server_port)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"scientist serve: stopped at {time.strftime('%H:%M:%S')}", file=out, flush=True)
