"""The runbook's key procedures: a key rotation, and a team member who leaves.

Generated from the site's config like the recovery scenarios (runner/runbook.py): its
targets, its recipients, ``[keys] rotate_every``, whether this host holds an identity. What
each command does and costs: README, "Keys and team changes".
"""

from __future__ import annotations

from ..config import Config


def procedures(cfg: Config, ek: str, operator: str, keyholder: str) -> list[str]:
    """The two procedures as Markdown lines; ``ek``: ``emberkeep -c CONFIG``."""
    targets = ", ".join(f"`{t.name}`" for t in cfg.targets)
    identity = "" if cfg.keys.identity_file else " --identity /path/to/identity.txt"
    every = cfg.keys.rotate_every
    when = (
        f'`[keys] rotate_every = "{every}"`: `emberkeep status` warns once the newest key '
        "epoch of a target is older."
        if every
        else "No `[keys] rotate_every` is set: `emberkeep status` shows each target's key epoch "
        'age only; set one (e.g. `rotate_every = "180d"`) to be warned when a rotation is due.'
    )
    labels = cfg.keys.labels
    recipients = ", ".join(
        f"`{labels[r]}` (`{r}`)" if r in labels else f"`{r}`" for r in cfg.keys.recipient_keys
    )
    return [
        "## Key rotation",
        "",
        f"A new read-key epoch for new data, in every target ({targets}). {when} No identity "
        f"is needed and no data is rewritten; old snapshots stay readable. Who: {operator}.",
        "",
        "```sh",
        f"{ek} keys list    # the epochs, and which snapshots need each",
        f"{ek} keys rotate  # a new epoch: new packs use it from now on",
        "# every pack's data key opens under the identity (its wrapped key only, per epoch):",
        f"{ek} keys check{identity}",
        "# every pack is read and decrypted under the identity:",
        f"{ek} check --read-data{identity}",
        "```",
        "",
        "## A team member leaves",
        "",
        f"Their identity must stop reading new backups. The recipients now: {recipients}. "
        "`keys remove` takes theirs (its `age1…` or its label: RECIPIENT below) with a "
        "remaining recipient's identity, re-encrypts the epoch files in every target (a few "
        f"kilobytes) and starts a new epoch. Who: {keyholder}.",
        "",
        "```sh",
        f"{ek} keys remove RECIPIENT --update-config{identity}",
        "# if they had a backup host (its writer key): lock it out; the next backup uploads",
        "# everything once more, and every other backup host runs `emberkeep init --identity`",
        f"{ek} keys rotate --writer",
        "# the recipients, their labels and the epochs:",
        f"{ek} keys list",
        "# what they can still read, per target (the snapshots, from when to when):",
        f"{ek} keys check{identity}",
        "```",
        "",
        "What was written before the epoch they were removed in, they can still read in the "
        "targets they can reach, if they kept a copy of its key (`keys check` lists those "
        "snapshots, and the later ones that reuse some of their packs): take their storage "
        "credentials away (the targets' SSH keys, S3 access keys). A plain `replicate` copies "
        "packs and their epoch keys as they are; to shut such a copy out of the old data as "
        "well, copy it re-encrypted into a new target (a location they never had credentials "
        "for), under that target's own key epoch, then make it the primary:",
        "",
        "```sh",
        "# a new [[targets]] block NEW in the config (after `keys remove`), then:",
        f"{ek} init --target NEW",
        f"{ek} replicate --target NEW --re-encrypt{identity}",
        f"{ek} check --read-data --target NEW{identity}",
        "# move NEW's block first in [[targets]] (backups write there from now on); the old",
        "# targets keep what their old keys open: delete them once NEW is what you keep",
        "```",
        "",
    ]
