"""The commented sample config that ``emberkeep config sample`` prints.

It expresses the strategy this program implements (docs/design.md: a
backup-and-recovery strategy's tables) for the shop it was written for: MongoDB daily with 14 daily,
3 months of weekly and a year of monthly snapshots; configuration files (the ``.env`` files
and nginx's site) weekly for 6 months; media daily for 30 days; the git repository; a local,
a remote (sftp) and a cold (s3, monthly only) target; the RPOs and RTOs of its tables; a
monthly restore drill, a weekly check; alerts by email and webhook.

The recipients are left for the user to fill in (``--recipient``, or by hand): a sample
that validated with someone else's key would encrypt backups nobody on this site can read.
``tests/test_config_sample.py`` checks the sample parses and validates.
"""

from __future__ import annotations

import json

PLACEHOLDER = "age1…"  # not a recipient: the config refuses it until one is filled in

SAMPLE = """\
# emberkeep configuration: the strategy for one site, as `emberkeep config sample` prints it.
# Times are UTC. Durations: 90s, 15m, 24h, 7d. Schedules: cron ("0 2 * * *") or @daily etc.
# Check a change with `emberkeep -c FILE config check` before the scheduler picks it up.

[site]
name = "candle-ecommerce"
state_dir = "/var/lib/emberkeep"            # writer key, files cache, journal; mode 0700

[keys]
# Who can read backups: the age recipients (public keys) of `emberkeep keygen`, one per
# person holding an identity. Any one of them can restore. This host needs none of the
# identities to back up; keep them offline. A recipient may carry a label naming its holder
# (shown by `keys list`, accepted by `keys remove`): {{ key = "age1…", label = "dba" }}.
recipients = {recipients}
# identity_file = "/etc/emberkeep/identity.txt"   # only on a host that restores or drills
# rotate_every = "180d"   # status warns when the newest key epoch is older: `keys rotate`

# ---- what is backed up ------------------------------------------------------------------

[[sources]]
name = "mongodb"
type = "mongodb"
# The URI holds the backup user's password: keep this file 0600, owned by root. Errors
# and logs show it redacted.
uri = "mongodb://backup:change-me@localhost:27017/?authSource=admin"
databases = ["candle-ecommerce"]            # default: all but admin, local and config
exclude = []                                # "db.collection" shell patterns left out
parallel = 4                                # collections read at once
schedule = "0 2 * * *"                      # daily
retention = {{ daily = 14, weekly = 13, monthly = 12 }}   # 14 days, 3 months, 1 year
# The strategy's daily dumps gave the database an RPO of 24 h; the oplog archiver
# (`emberkeep oplog run`, a service of its own) moves it to a minute: every write is sealed
# into the repository within seconds and `restore --at TIME` replays to any moment.
pitr = {{ enabled = true, slice = "5s", max_lag = "1m" }}
objectives = {{ rpo = "1m", rto = "1h" }}    # "Database corruption: 1 hour"
# drill_uri = "mongodb://localhost:27018"   # where drills restore; default: uri (scratch dbs)

[sources.hooks]
before_restore = "pm2 stop candle-backend"
after_restore = "pm2 start candle-backend"
timeout = "10m"
env = ["PM2_HOME"]                          # passed on from emberkeep's environment

[[sources]]
name = "config"
type = "files"
paths = [
    "/var/www/candle-ecommerce/.env.local",
    "/var/www/candle-ecommerce/server/.env",
    "/etc/nginx/sites-available/candle-ecommerce",
]
schedule = "0 3 * * 0"                      # weekly, Sunday
retention = {{ weekly = 26 }}                 # 6 months
objectives = {{ rpo = "7d", rto = "4h" }}

[[sources]]
name = "media"
type = "files"
paths = ["/var/www/candle-ecommerce/public/media"]
exclude = ["*.tmp", "cache/"]
schedule = "30 2 * * *"                     # daily
retention = {{ daily = 30 }}
objectives = {{ rpo = "24h", rto = "4h" }}

[[sources]]
name = "code"
type = "git"                                # every ref as a bundle
path = "/var/www/candle-ecommerce"
schedule = "0 1 * * *"
retention = {{ daily = 14, weekly = 13 }}
# mirror = "git@mirror.example.com:candle-ecommerce.git"   # pushed after each backup

# Log files are not backed up: they are rotated (14 days, kept locally).

# ---- where it goes ----------------------------------------------------------------------

[[targets]]
name = "local"                              # the first target: backups write here
url = "file:///var/backups/candle-ecommerce"

[[targets]]
name = "remote"                             # another machine: the host can be lost
url = "sftp://backup-user@backup-server.example.com/backups/candle-ecommerce?key=/root/.ssh/backup_ed25519"
copies = "all"

[[targets]]
name = "cold"                               # long-term archive: the monthly snapshots
url = "s3://candle-backups/cold?region=eu-west-1&storage_class=DEEP_ARCHIVE&lock_days=400"
copies = "monthly"                          # all | weekly | monthly
retention = {{ mongodb = {{ monthly = 12 }} }}  # per source: replaces its retention here

# ---- jobs -------------------------------------------------------------------------------

[replicate]
schedule = "15 * * * *"                     # fills in copies a target missed while down

[prune]
schedule = "0 4 * * *"
grace = "1h"                                # condemned packs wait this long

[check]
schedule = "0 5 * * 0"                      # "Backup verification: weekly"
read_data_subset = "10%"                    # also decrypt and verify a tenth each time

[drill]
schedule = "0 6 1 * *"                      # "Database restoration: monthly"
sources = ["mongodb", "config"]             # default: every source
target = "remote"                           # restore from the copy that survives the host

# ---- watching ---------------------------------------------------------------------------

[notify]                                    # failures, RPO/RTO breaches, anomalies, low space
webhooks = ["https://hooks.example.com/emberkeep"]
rate_limit = "6h"                           # an ongoing problem is repeated at most this often
on_success = false                          # also a message after each good backup
timeout = "10s"

[notify.email]
url = "smtp://mail.example.com:587?starttls=true"   # smtp://user:password@… to log in
from = "backup@example.com"
to = ["admin@example.com"]

[monitor]
grace = "1h"                                # a scheduled source is late this much past due
min_free = "5GiB"                           # a target with less free space alerts
anomaly_change = 0.3                        # a backup 30% off the median of the last runs
anomaly_runs = 5
journal_keep = "365d"
# metrics_port = 9105                       # Prometheus, on 127.0.0.1
# metrics_textfile = "/var/lib/node_exporter/textfile/emberkeep.prom"

[web]                                       # the dashboard, `emberkeep web`
listen = "127.0.0.1:8470"                   # another address needs token_file, and TLS
actions = true                              # false: read-only, no "back up now"
# token_file = "/etc/emberkeep/web-token"   # one line, mode 0600: the bearer token
# tls_cert = "/etc/emberkeep/web-cert.pem"
# tls_key = "/etc/emberkeep/web-key.pem"    # mode 0600

[runbook]
roles = {{ operator = "on-call admin", keyholder = "the owner", approver = "the owner" }}
"""


def sample(recipients: list[str] | None = None) -> str:
    """The sample, with ``recipients`` filled in (placeholders when none are given)."""
    listed = recipients or [PLACEHOLDER]
    return SAMPLE.format(recipients=json.dumps(listed, ensure_ascii=False))
