"""Apply a changed config without a restart: SIGHUP, or a change to any file the config reads.

A reload is the same load → validate → freeze path as ``check`` (``settings.load_config``), keys
resolved; the new :class:`~gateway.settings.Config` then replaces the runtime's in one assignment.
A request reads the runtime once when it starts (``pipeline._stages``), so it finishes on the snapshot
it started with and the next request sees the new one. What holds state across requests follows the
new config without losing it: rate-limit buckets and the upstream queue are kept when their backend
is unchanged (their per-client limits are re-read), the upstream connection pool is kept when the
upstream settings are equal, and when a jwt client changed the JWT verifier is rebuilt, keeping the
key sets and cached verifications of every issuer whose clients did not change
(``JwtVerifier.inherit``) and dropping those of the issuers that did.

An invalid new config changes nothing: one log line lists every problem in ``check``'s words (they
never include a secret), ``proget_gateway_config_reloads_total{result="failure"}`` counts it, and the
old snapshot keeps serving (``/readyz`` stays ready). ``listen`` and ``admin`` need new sockets,
``tracing`` a new exporter and the head limits a new listener: a change there is logged as needing a
restart and not applied (:data:`_RESTART_ONLY`).

The files are looked at every :data:`POLL_MS` (a ``stat`` each: device, inode, size, times), not
watched with inotify. The kubelet updates a mounted ConfigMap or Secret by swapping the ``..data``
symlink, so inotify had to watch the files' *directories*, and then every write to any file there
woke the watcher's thread on the gateway's core: a log file next to the config (``serve --config
gateway.yaml > gateway.log``, or the bench's own log) cost 2-8 µs of every request (93.7-98.9 against
91.2-92.7 µs in alternating runs). ``watchfiles``' own polling compares modification times in whole
seconds and missed a second edit within the same second. ``stat`` follows the symlinks, so a swap is a
new inode; a change applies within :data:`POLL_MS` + :data:`DEBOUNCE_MS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from gateway import metrics
from gateway.admission import Admission
from gateway.pipeline import Runtime
from gateway.settings import Config, ConfigError, in_folder, load_config
from gateway.upstream import UpstreamClient
from gateway.workload_identity import JwtVerifier

log = logging.getLogger("proget_gateway")
DEBOUNCE_MS = 200  # an editor's save or a kubelet swap is several events; one reload for all of them
POLL_MS = 500  # how often the files the config reads are looked at
OLD_CLIENT_GRACE = 600.0  # seconds a replaced upstream pool stays open for the requests still using it


class Reloader:
    """Owns reloading one runtime from one config file."""

    def __init__(self, runtime: Runtime, path: Path) -> None:
        self.runtime = runtime
        self.path = path
        self._lock = asyncio.Lock()
        metrics.CONFIG_GENERATION.set(runtime.config.generation)
        metrics.CONFIG_LAST_SUCCESS.set(time.time())

    async def reload(self, why: str) -> bool:
        """Load, validate and swap; False (and nothing changed) when the new config is invalid."""
        async with self._lock:
            old = self.runtime.config
            try:
                new = await asyncio.to_thread(load_config, self.path)
            except ConfigError as err:
                metrics.CONFIG_RELOADS.labels("failure").inc()
                problems = "; ".join(err.problems)
                log.error(
                    "config reload (%s) refused, still serving generation %d: %s: %d problem(s): %s",
                    why, old.generation, err.source, len(err.problems), problems,
                )  # fmt: skip
                return False
            new = _keep_restart_only(old, new)
            new = replace(new, generation=old.generation + 1)
            await self._swap(old, new)
            metrics.CONFIG_RELOADS.labels("success").inc()
            metrics.CONFIG_GENERATION.set(new.generation)
            metrics.CONFIG_LAST_SUCCESS.set(time.time())
            log.info(
                "config reloaded (%s): generation %d, %d client(s), %d key(s)",
                why, new.generation, len(new.settings.clients), len(new.keys),
            )  # fmt: skip
            return True

    async def _swap(self, old: Config, new: Config) -> None:
        runtime = self.runtime
        upstream, retired_upstream = runtime.upstream, None
        if new.settings.upstream != old.settings.upstream:
            upstream, retired_upstream = UpstreamClient(new.settings.upstream), runtime.upstream
            await upstream.start()
        jwt, retired_jwt = runtime.jwt, None
        if _identity_settings(new) != _identity_settings(old):
            jwt, retired_jwt = JwtVerifier(new), runtime.jwt
            if retired_jwt is not None:
                jwt.inherit(retired_jwt)  # what belongs to unchanged issuers stays cached
            await jwt.start()
        admission, retired_admission = runtime.admission, None
        if admission is None or not admission.follow(new):
            admission, retired_admission = Admission(new), runtime.admission
        runtime.adopt(new, upstream, jwt, admission)
        _retire(retired_upstream, retired_jwt, retired_admission)

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload when a file the config reads changes, until ``stop``: each is looked at every
        :data:`POLL_MS`; once one has changed, one reload after :data:`DEBOUNCE_MS` for the steps of
        the same edit. What was looked at is taken before the reload reads the files, so a change made
        while it runs is seen at the next look (one reload more, never one less). Which files are
        looked at follows the config in use, however it was reloaded (a file change or SIGHUP)."""
        files = watched_files(self.path, self.runtime.config)
        seen = fingerprints(files)
        while not await _stopped(stop, POLL_MS):
            watched = watched_files(self.path, self.runtime.config)
            if watched != files:  # the config now reads other files: watch those instead
                files, seen = watched, fingerprints(watched)
                continue
            if fingerprints(files) == seen:
                continue
            if await _stopped(stop, DEBOUNCE_MS):
                return
            now = fingerprints(files)
            changed = {path.name for path, was, is_ in zip(files, seen, now, strict=True) if was != is_}
            seen = now
            why = f"file change: {', '.join(sorted(changed)) or 'undone'}"
            try:
                await self.reload(why)
            except Exception as exc:  # the watch outlives one failed swap; SIGHUP retries
                log.error("config reload (%s) failed: %s; still watching", why, type(exc).__name__)


async def _stopped(stop: asyncio.Event, ms: int) -> bool:
    """Whether ``stop`` is set within ``ms`` milliseconds."""
    try:
        await asyncio.wait_for(stop.wait(), ms / 1000)
    except TimeoutError:
        return False
    return True


def fingerprints(files: list[Path]) -> list[tuple[int, ...] | None]:
    """What identifies each file's content without reading it: device, inode, size and both times
    (nanoseconds; a rename into place is a new inode, a kubelet ``..data`` swap a new target, since
    ``stat`` follows symlinks); None for a file that cannot be looked at (gone, not readable)."""
    found: list[tuple[int, ...] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found


def watched_files(path: Path, config: Config) -> list[Path]:
    """The config file and every file it reads: key files, token files, JWKS files, the Redis URL."""
    base = path.parent
    settings = config.settings
    files = [path]
    files += [s.file for s in settings.keys.values() if s.file is not None]
    files += [c.tokens_file for c in settings.clients if c.tokens_file is not None]
    files += [c.jwt.jwks_file for c in settings.clients if c.jwt is not None and c.jwt.jwks_file is not None]
    redis = settings.rate_limit.redis
    if redis is not None and redis.url_file is not None:
        files.append(redis.url_file)
    return [in_folder(base, f) for f in files]


# Settings fixed when the process starts: the bound sockets (listen, admin, keep-alive included), the
# exporter (tracing), and the head limits the listener's protocol class was built with
# (gateway.http1.Site). A change is reported and the running value kept, everywhere alike.
_RESTART_ONLY = (
    "listen",
    "admin",
    "tracing",
    "limits.head_timeout",
    "limits.max_target_bytes",
    "limits.max_header_bytes",
    "limits.max_header_count",
)


def _keep_restart_only(old: Config, new: Config) -> Config:
    """``new`` with the running value of every :data:`_RESTART_ONLY` setting; each change logged."""
    settings = new.settings
    for dotted in _RESTART_ONLY:
        section, _, field = dotted.partition(".")
        running, wanted = getattr(old.settings, section), getattr(settings, section)
        if field:
            running_value = getattr(running, field)
            if getattr(wanted, field) == running_value:
                continue
            running = wanted.model_copy(update={field: running_value})
        elif wanted == running:
            continue
        log.warning("config reload: %s changed; it needs a restart and is not applied", dotted)
        settings = settings.model_copy(update={section: running})
    return replace(new, settings=settings)


def _identity_settings(config: Config) -> object:
    return (tuple(c.model_dump_json() for c in config.jwt_clients), repr(sorted(config.jwks_files.items())))


def _retire(*things: object) -> None:
    """Close what the new snapshot replaced, after the requests still using it had time to finish."""

    async def later() -> None:
        await asyncio.sleep(OLD_CLIENT_GRACE)
        for thing in things:
            close = getattr(thing, "close", None)
            if close is not None:
                await close()

    if any(t is not None for t in things):
        task = asyncio.get_running_loop().create_task(later())
        _RETIRING.add(task)
        task.add_done_callback(_RETIRING.discard)


_RETIRING: set[asyncio.Task[None]] = set()
