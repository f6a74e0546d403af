"""edge-hmi: the operator's screen, a process of its own beside the daemon (``pip install ".[hmi]"``).

It subscribes to the daemon's verdicts, statuses and screen images (edge.images) and serves the
live page and the review of evidence; the daemon neither knows nor waits for it."""
