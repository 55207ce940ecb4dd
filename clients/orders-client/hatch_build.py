"""Put the client's packages into the wheel when it is built in the repository.

There they are two folders up, at the repository's root; in an sdist of this project they are
at its top (the sdist's `force-include` put them there) and `only-include` selects them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PACKAGES = ("orders_client", "schemas", "orders_vocabulary")


class ClientPackages(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for name in PACKAGES:
            if not (root / name).is_dir():  # not an sdist: in the repository
                build_data["force_include"][str(root.parents[1] / name)] = name
