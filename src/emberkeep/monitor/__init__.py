"""Monitoring: is the site protected right now, and who hears when it is not.

- ``jobs.watch``: every job run journaled (journal/), with the alerts it raises or resolves;
- ``status``: per source RPO (ok / late / breached) and RTO, per target space, copies, lag,
  collected into a ``report`` (the model), whose rpo/rto/low-space ``alerts`` it raises;
- ``anomalies``: a backup unlike its recent ones; a target running out of space;
- ``notify``: email (SMTP) and webhooks, rate-limited, with "resolved" messages;
- ``metrics``: Prometheus text for `emberkeep metrics`, `run`'s /metrics and textfile
  (``exporter``: what `run` does between jobs: alerts, the textfile, the served text).

Each module is imported where it is used: a backup from cron loads only ``jobs``.
"""
