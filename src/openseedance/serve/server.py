"""Starting the server (`openseedance serve`) and stand-alone workers (`openseedance worker`)."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from pathlib import Path

from openseedance.serve.api import ServeSettings

log = logging.getLogger("openseedance.serve")

KEYS_ENV = "OPENSEEDANCE_API_KEYS"


def api_keys(given: list[str], data_dir: Path) -> tuple[str, ...]:
    """Keys from the command line, else from $OPENSEEDANCE_API_KEYS (comma-separated), else the
    data folder's `api_keys` file, made with one fresh key on first start."""
    keys = [k.strip() for k in given if k.strip()]
    keys += [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if keys:
        return tuple(keys)
    path = data_dir / "api_keys"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"osd-{secrets.token_urlsafe(24)}\n")
        log.warning("made an API key in %s", path)
    keys = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise ValueError(f"{path} holds no API keys (one per line)")
    return tuple(keys)


def serve(settings: ServeSettings, host: str, port: int) -> None:
    import uvicorn

    from openseedance.serve.app import create_app

    app = create_app(settings)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    log.warning("serving %s on %s with %d worker(s)", settings.model or "the bundled model", where, settings.workers)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def work(settings: ServeSettings) -> None:
    """A worker with no HTTP server, for machines that share the job store."""
    from openseedance.serve.worker import run_worker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_worker(settings, stop)
