"""What the commands share: the subparsers type, listing refused entries."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .. import ui

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction


def print_refused(refused: list[dict[str, str]], done: str) -> None:
    """Entries the snapshot holds that were not written, each with why (exit status 1)."""
    for entry in refused:
        ui.error(f"{entry['path']}: {entry['reason']}")
    if refused:
        ui.error(
            f"{len(refused)} entries of the snapshot were not {done} (above); everything else "
            "was. The snapshot is damaged or was forged: check the repository"
        )
