"""Running the API under gunicorn, the production WSGI server.

Workers build their own app (and so their own pool) after fork. Prometheus runs in multiprocess mode
so /metrics adds up every worker.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from ledger import create_app

        return create_app()


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def run_gunicorn(bind: str, workers: int, threads: int, worker_class: str) -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ledger-metrics-")
    _Gunicorn(
        {
            "bind": bind,
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class,
            "accesslog": None,  # access logs would carry client addresses; metrics cover traffic
            "errorlog": "-",
            "loglevel": "warning",
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 5,
            "limit_request_field_size": 8190,
            "limit_request_line": 8190,
            "child_exit": _child_exit,
        }
    ).run()
