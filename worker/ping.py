"""Health check of a worker container: `python -m worker.ping`.

Asks this host's Celery node (`celery@<hostname>`, Celery's default node name; `python -m
worker.ping webhooks`: `webhooks@<hostname>`) to answer a
ping over the broker, like `celery -A worker.celery_app inspect ping -d celery@$HOSTNAME`,
but without importing the worker app (and torch with it): a check that runs every 30 s
must cost a fraction of a second, not a full worker's start-up.
"""

from __future__ import annotations

import socket
import sys

from api.queue import make_celery
from api.settings import get_settings


def main(prefix: str = "celery", timeout: float = 10.0) -> int:
    node = f"{prefix}@{socket.gethostname()}"
    app = make_celery(get_settings())
    replies = app.control.ping(destination=[node], timeout=timeout)
    answered = any(node in reply for reply in replies)
    print(f"{node}: {'pong' if answered else 'no answer'}")
    return 0 if answered else 1


if __name__ == "__main__":  # `python -m worker.ping [PREFIX]`: a node named PREFIX@<hostname>
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "celery"))
