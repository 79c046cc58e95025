"""`keygen`, `keys` (who can read the backups) and `init` (the repository in each target)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config, ui
from ..site import Site
from .common import Subparsers


def add_keygen(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("keygen", parents=[common], help="make a new identity; prints its recipient")
    p.add_argument("-o", "--output", type=Path, default=Path("emberkeep-identity.txt"))
    p.add_argument(
        "--passphrase",
        action="store_true",
        help="encrypt the identity file with a passphrase (asked on the terminal, or read "
        "from --passphrase-file or EMBERKEEP_IDENTITY_PASSPHRASE_FILE); `age -d` reads it",
    )
    p.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="its first line is the passphrase"
    )
    p.set_defaults(handler=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    from .. import keys as identity_keys
    from ..runner import setup

    passphrase = None
    if args.passphrase or args.passphrase_file:
        passphrase = identity_keys.read_passphrase(
            args.passphrase_file, f"the new identity {args.output}", confirm=True
        )
    recipient = setup.keygen(args.output, passphrase)
    if args.json:
        ui.print_json({"identity_file": str(args.output), "recipient": recipient})
    else:
        ui.line(f"identity written to {args.output} (keep it offline, mode 0600)", stderr=True)
        print(recipient)
    return 0


def add_keys(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "keys", parents=[common], help="who can read the backups: list, add, remove, rotate"
    )
    keys_sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = keys_sub.add_parser("list", parents=[common], help="recipients, key epochs, writer key")
    k.add_argument("--target")
    for action, what, which in (
        ("add", "give RECIPIENT access", "an age1… recipient"),
        ("remove", "take RECIPIENT's away", "an age1… recipient, or its label"),
    ):
        k = keys_sub.add_parser(action, parents=[common], help=what)
        k.add_argument("recipient", metavar="RECIPIENT", help=which)
        k.add_argument("--target", help="only this target (default: every target)")
        k.add_argument(
            "--update-config",
            action="store_true",
            help="also rewrite [keys] recipients in the config file to the new set",
        )
        if action == "add":
            k.add_argument(
                "--label",
                metavar="NAME",
                help="a short name for the recipient (e.g. dba), shown by `keys list` and "
                "accepted by `keys remove`; on an existing recipient, relabels it",
            )
    k = keys_sub.add_parser(
        "check",
        parents=[common],
        help="every pack's data key opens; what a removed recipient can still read",
    )
    k.add_argument("--target")
    k = keys_sub.add_parser("rotate", parents=[common], help="a new key epoch for new data")
    k.add_argument("--target")
    k.add_argument(
        "--writer",
        action="store_true",
        help="also a new writer key (every target): the next backup uploads all data again, "
        "and hosts holding only the old key are refused until `init --identity` there",
    )
    k = keys_sub.add_parser(
        "convert", parents=[common], help="give a repository from before key epochs its epochs"
    )
    k.add_argument("--target")
    p.set_defaults(handler=cmd_keys)


def cmd_keys(site: Site, args: argparse.Namespace) -> int:
    from ..runner import keyconfig, rekey

    action = args.keys_command
    if action == "list":
        listing = rekey.list_keys(site, args.target)
        if args.json:
            ui.print_json(listing)
            return 0
        for target, info in listing.items():
            ui.line(f"target {target}: writer key {info['writer_key']['fingerprint']}")
            for writer in info["writer_keys"]:
                state = "current" if writer["current"] else "retired"
                ui.line(
                    f"  writer key generation {writer['generation']} ({state}): "
                    f"{writer['fingerprint']}"
                )
            for recipient in info["recipients"]:
                label = info["labels"].get(recipient)
                ui.line(f"  recipient {recipient}" + (f" ({label})" if label else ""))
            for gone in info["removed"]:
                label = f" ({gone['label']})" if gone["label"] else ""
                ui.line(
                    f"  removed {gone['recipient']}{label} at {gone['removed']}: its key "
                    f"files were encrypted to it for epochs {gone['epochs'] or 'none left'}"
                )
            if not info["converted"]:
                ui.line(
                    f"  no key epochs yet ({info['legacy_packs']} packs wrapped to the "
                    "recipients directly): `emberkeep keys convert` gives it them"
                )
            for epoch in info["epochs"]:
                flags = " (current)" if epoch["current"] else ""
                flags += " (legacy: packs from before epochs)" if epoch["legacy"] else ""
                ui.line(
                    f"  epoch {epoch['number']}{flags}: since {epoch['created']}, "
                    f"{epoch['packs']} packs, needed by {len(epoch['snapshots'])} snapshots, "
                    f"its key encrypted to {epoch['encrypted_to']} recipients"
                )
        return 0
    if action == "check":
        return _cmd_check(site, args)
    if action == "add":
        changes = rekey.add(site, args.recipient, args.target, args.label)
    elif action == "remove":
        changes = rekey.remove(site, args.recipient, args.target)
    elif action == "rotate" and args.writer:
        changes = rekey.rotate_writer(site, args.target)
    else:
        changes = getattr(rekey, action)(site, args.target)
    config_note = None
    if action in ("add", "remove") and changes:
        names = changes[0].recipients
        labels = keyconfig.merged_labels(site, names, changes[0].labels)
        if args.update_config:
            rekey.update_config(site, names, labels)
            site = Site(config.load(args.config), identity_file=args.identity)
        same = sorted(str(r) for r in site.recipients) == names
        if same:
            rekey.store_site_config(site, args.target)  # what recover starts from
        if not keyconfig.names_them(site, names, labels):
            config_note = (
                f"put this line in [keys] of {site.config.path} (or run again with "
                "--update-config); "
                + ("its labels differ from the repository's: " if same else
                   "backups are refused until it is there: ")
                + rekey.config_line(names, labels)
            )  # fmt: skip
    if args.json:
        ui.print_json({"changes": [c.to_json() for c in changes], "config": config_note})
        return 0
    for c in changes:
        ui.line(
            f"target {c.target}: {c.message} ({len(c.objects_written)} objects, "
            f"{c.bytes_written} bytes written, {c.seconds:.2f}s)"
        )
    if config_note:
        ui.warning(config_note)
    return 0


def _cmd_check(site: Site, args: argparse.Namespace) -> int:
    from ..runner import keyaudit

    audits = keyaudit.check(site, args.target)
    ok = all(a.ok for a in audits)
    if args.json:
        ui.print_json({"ok": ok, "targets": {a.target: a.to_json() for a in audits}})
        return 0 if ok else 1
    for audit in audits:
        for line in keyaudit.text(audit):
            ui.line(line)
    return 0 if ok else 1


def add_init(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create the repository in each target")
    p.add_argument("--target")
    p.add_argument(
        "--new",
        action="store_true",
        help="create a repository even in an empty target this host used before "
        "(refused otherwise: its disk may be unmounted)",
    )
    p.set_defaults(handler=cmd_init)


def cmd_init(site: Site, args: argparse.Namespace) -> int:
    from ..runner import setup

    outcomes = setup.init(site, args.target, new=args.new)
    if args.json:
        ui.print_json([o.__dict__ for o in outcomes])
    else:
        for o in outcomes:
            ui.line(f"target {o.target}: {o.message}")
    return 0
