"""The admin port's status page: what the gateway is doing, for a person, in one server-rendered page.

Operators ask three questions of a central gateway: is it healthy, who is being refused and why, and
what would happen to this request. The page answers them from memory the gateway already bounds —
a ring of the last refusals and per-minute counts per client for the last :data:`WINDOW_MINUTES`
minutes (client names come from the config, so the counts are bounded too) — and runs the same
decision stages as ``proget-gateway explain`` for a client picked by name (no token is ever typed in).

It is one HTML document with inline CSS and no script or external asset, so it works offline and
behind any proxy. Every value on it is HTML-escaped; paths are the canonical ones the audit line
carries (query values elided) and pass the one redactor first. Nothing on it is a key or a token.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from urllib.parse import urlsplit

from gateway import __version__
from gateway.audit import Flow
from gateway.explain import explain_as
from gateway.redact import redact
from gateway.settings import HTTP_METHODS, Config, trace_sample_ratio, tracing_wanted

WINDOW_MINUTES = 15
_MAX_SHOWN_PATH = 200


@dataclass(frozen=True, slots=True)
class Refusal:
    at: float  # wall-clock seconds
    client: str
    method: str
    path: str  # canonical, query values elided, redacted
    reason: str  # the stable error code


@dataclass(slots=True)
class Counts:
    allowed: int = 0
    refused: int = 0
    errors: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class Recent:
    """Bounded memory of recent decisions: the last ``size`` refusals, and per-minute counts per client
    over the last :data:`WINDOW_MINUTES` minutes. One dict lookup and an increment per request."""

    def __init__(self, size: int) -> None:
        self.refusals: deque[Refusal] = deque(maxlen=size)
        self._minutes: deque[tuple[int, dict[str, Counts]]] = deque(maxlen=WINDOW_MINUTES)

    def resize(self, size: int) -> None:
        if size != self.refusals.maxlen:
            self.refusals = deque(self.refusals, maxlen=size)

    def record(self, flow: Flow) -> None:
        now = time.time()
        minute = int(now // 60)
        if not self._minutes or self._minutes[-1][0] != minute:
            self._minutes.append((minute, {}))
        per_client = self._minutes[-1][1]
        client = flow.client or "-"
        counts = per_client.get(client)
        if counts is None:
            counts = per_client[client] = Counts()
        if flow.decision == "allow" and flow.error is None:
            counts.allowed += 1
            return
        if flow.decision != "deny":
            counts.errors += 1
            return
        counts.refused += 1
        counts.reasons[flow.code] += 1
        path = redact(flow.shown_path(), flow.secrets)[:_MAX_SHOWN_PATH]
        self.refusals.append(Refusal(now, client, redact(flow.method, flow.secrets), path, flow.code))

    def per_client(self, now: float | None = None) -> dict[str, Counts]:
        """Counts per client summed over the minutes still in the window."""
        oldest = int((now or time.time()) // 60) - WINDOW_MINUTES + 1
        total: dict[str, Counts] = {}
        for minute, clients in self._minutes:
            if minute < oldest:
                continue
            for name, c in clients.items():
                t = total.setdefault(name, Counts())
                t.allowed, t.refused, t.errors = (
                    t.allowed + c.allowed,
                    t.refused + c.refused,
                    t.errors + c.errors,
                )
                t.reasons.update(c.reasons)
        return total


@dataclass(frozen=True, slots=True)
class Upstream:
    answering: bool
    components: dict[str, float]  # gateway.upstream_health.component_health


@dataclass(frozen=True, slots=True)
class ExplainForm:
    client: str  # a configured client's name, or "" for anonymous
    method: str
    url: str


def render(config: Config, recent: Recent, upstream: Upstream, form: ExplainForm | None) -> str:
    """The whole page."""
    parts = [
        _HEAD,
        "<h1>proget-gateway</h1>",
        _facts(config, upstream),
        _clients(recent),
        _refusals(recent),
        _explain(config, form),
        "</body></html>",
    ]
    return "\n".join(parts)


def _facts(config: Config, upstream: Upstream) -> str:
    generation = getattr(config, "generation", None)
    rows = [
        ("version", __version__),
        ("config", config.source + (f" (generation {generation})" if generation is not None else "")),
        ("upstream", config.settings.upstream.url),
        ("ProGet answers HTTP", "yes" if upstream.answering else "no"),
        ("traces", traces_summary(config)),
    ]
    rows += [(f"ProGet {name}", "OK" if ok else "not OK") for name, ok in sorted(upstream.components.items())]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<section id="facts"><h2>Gateway</h2><table>{body}</table></section>'


def traces_summary(config: Config) -> str:
    """Whether spans are exported and where (the configured endpoint carries no credential; one from
    the environment is not shown)."""
    if not tracing_wanted(config.settings, os.environ):
        return "off"
    tracing = config.settings.tracing
    where = tracing.otlp_endpoint if tracing is not None and tracing.otlp_endpoint else "OTEL_* variables"
    ratio = trace_sample_ratio(config.settings, os.environ)
    return f"on: OTLP/HTTP to {where}, sample ratio {'from OTEL_TRACES_SAMPLER' if ratio is None else ratio}"


def _clients(recent: Recent) -> str:
    counts = recent.per_client()
    rows = [
        "<tr><th>client</th><th>allowed</th><th>refused</th><th>errors</th><th>top refusal reasons</th></tr>"
    ]
    for name, c in sorted(counts.items()):
        reasons = ", ".join(f"{code} ({n})" for code, n in c.reasons.most_common(3))
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{c.allowed}</td><td>{c.refused}</td><td>{c.errors}</td>"
            f"<td>{escape(reasons)}</td></tr>"
        )
    title = f"Requests by client, last {WINDOW_MINUTES} minutes"
    return f'<section id="clients"><h2>{title}</h2><table>{"".join(rows)}</table></section>'


def _refusals(recent: Recent) -> str:
    rows = ["<tr><th>time (UTC)</th><th>client</th><th>method</th><th>path</th><th>reason</th></tr>"]
    for r in reversed(recent.refusals):
        at = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            f"<tr><td>{at}</td><td>{escape(r.client)}</td><td>{escape(r.method)}</td>"
            f'<td><code>{escape(r.path)}</code></td><td class="reason">{escape(r.reason)}</td></tr>'
        )
    return f'<section id="refusals"><h2>Recent refusals</h2><table>{"".join(rows)}</table></section>'


def _explain(config: Config, form: ExplainForm | None) -> str:
    chosen = form.client if form else ""
    names = ["", *config.clients]
    options = "".join(_option(n, n or "(anonymous)", n == chosen) for n in names)
    method = form.method if form else "GET"
    methods = "".join(f"<option{' selected' if m == method else ''}>{m}</option>" for m in HTTP_METHODS)
    url = escape(form.url) if form else ""
    result = ""
    if form is not None:
        lines, allowed = explain_as(config, form.client or None, form.method, _target(form.url))
        verdict = "allowed" if allowed else "refused"
        result = f'<pre id="explain-result" class="{verdict}">{escape(chr(10).join(lines))}</pre>'
    return f"""<section id="explain"><h2>Explain a request</h2>
<form method="get" action="/">
<label>client <select name="client" id="explain-client">{options}</select></label>
<label>method <select name="method" id="explain-method">{methods}</select></label>
<label>URL <input name="url" id="explain-url" size="60" value="{url}"
 placeholder="/nuget/internal/v3/index.json"></label>
<button type="submit" id="explain-submit">Explain</button>
</form>{result}</section>"""


def _option(value: str, text: str, selected: bool) -> str:
    mark = " selected" if selected else ""
    return f'<option value="{escape(value)}"{mark}>{escape(text)}</option>'


def _target(url: str) -> bytes:
    """A URL or a path typed into the form → the request-target the gateway would see."""
    parts = urlsplit(url)
    return ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")).encode("utf-8")


def parse_form(query: dict[str, str], config: Config) -> ExplainForm | None:
    """The explain form from the query string, or None when the page was asked for without it."""
    if "url" not in query:
        return None
    method = query.get("method", "GET").upper()
    client = query.get("client", "")
    return ExplainForm(
        client if client in config.clients else "",
        method if method in HTTP_METHODS else "GET",
        query["url"][:2048],
    )


_HEAD = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>proget-gateway status</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}
table{border-collapse:collapse;margin-bottom:1rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;font-size:.9rem}
th{background:#f2f2f2}
.reason{font-family:monospace;color:#8a1c1c}
pre{background:#f7f7f7;padding:.75rem;border:1px solid #ddd}
pre.refused{border-color:#c66}
pre.allowed{border-color:#6a6}
label{margin-right:1rem}
</style></head><body>"""
