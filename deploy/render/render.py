#!/usr/bin/env python3
"""Fills the native scripts' configuration templates in for the compose deployment.

    render.py VALUES_TOML OUTPUT_DIR

scripts/services/svc.py fills the same templates (deploy/kafka/server.properties,
deploy/cassandra/cassandra.yaml, deploy/mosquitto/mosquitto.conf) with loopback addresses; the
values file gives compose's host names and ports instead. Each `[[file]]` names a `template`
(relative to deploy/), a `target` (relative to OUTPUT_DIR) and its `values`. Placeholders are
`string.Template`'s, as in svc.py; a placeholder without a value, or a value no placeholder uses,
is an error, so the values cannot drift from the templates unnoticed. Standard library only: it
runs in a plain Python image before anything else of the deployment starts.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from string import Template

DEPLOY = Path(__file__).resolve().parents[1]


def render_all(values_file: Path, output_dir: Path) -> list[Path]:
    """Render every file `values_file` lists into `output_dir`; returns the files written."""
    spec = tomllib.loads(values_file.read_text())
    written = []
    for entry in spec["file"]:
        template = Template((DEPLOY / entry["template"]).read_text())
        values = {name: str(value) for name, value in entry["values"].items()}
        wanted = set(template.get_identifiers())
        if wanted != set(values):
            raise ValueError(
                f"{entry['target']}: template {entry['template']} wants {sorted(wanted)}, "
                f"values give {sorted(values)}"
            )
        target = output_dir / entry["target"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.substitute(values))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path in render_all(Path(argv[0]), Path(argv[1])):
        print(f"rendered {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
