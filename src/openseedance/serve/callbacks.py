"""Callbacks: on each status change of an Ark task with a `callback_url`, its task body is POSTed
there. Events are rows written with the status change itself, so none is lost to a restart; a
failed delivery is retried with growing pauses, `callback_retries` times. The URL is vetted like any
fetched input (no loopback, private or metadata addresses) at every attempt."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from openseedance.serve import ark
from openseedance.serve.api import Service
from openseedance.serve.fetch import post_json
from openseedance.serve.limits import InputError

log = logging.getLogger("openseedance.serve")


class Callbacks:
    def __init__(self, service: Service) -> None:
        self.service = service

    def deliver(self) -> int:
        """Send every due event once; returns how many were delivered."""
        store, s = self.service.store, self.service.settings
        delivered = 0
        for event_id, job_id, status, url, attempts in store.events():
            job = store.get(job_id)
            if job is None:
                store.event_done(event_id, delivered=False, retry_at=None)
                continue
            body = ark.render(replace(job, status=status), job.spec.base_url)
            try:
                post_json(url, body, self.service.callback_limits, "callback_url")
            except (InputError, OSError) as e:
                retry = attempts + 1 < s.callback_retries
                log.warning("callback for %s (%s) to %s failed%s: %s", job_id, status, url,
                            ", will retry" if retry else ", giving up", e)  # fmt: skip
                store.event_done(event_id, delivered=False, retry_at=time.time() + 2.0**attempts if retry else None)
                continue
            store.event_done(event_id, delivered=True, retry_at=None)
            delivered += 1
        return delivered
