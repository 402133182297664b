"""Write the key tables of docs/method.md ("Every key of the paper configuration") from the config.

    python scripts/config_keys_doc.py           # rewrites the tables in docs/method.md
    python scripts/config_keys_doc.py --check   # exit 1 if they differ from the config

The tables run from the "### `env`" heading to the end of the page: one per config section, each
key with its paper default and its help text (``twm.config_files.describe_keys``, the rows of
``twm config --keys``). tests/test_config_keys_doc.py runs the check, so a new key cannot be
left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twm.config_files import describe_keys

PAGE = Path(__file__).resolve().parent.parent / "docs" / "method.md"
START = "### `env`"


def tables() -> str:
    """The markdown of every section's table, from the ``### `env``` heading on."""
    lines: list[str] = []
    section = ""
    for key, default, help_text in describe_keys():
        name = key.split(".", 1)[0]
        if name != section:
            if section:
                lines.append("")
            lines += [f"### `{name}`", "", "| key | value | meaning |", "|---|---|---|"]
            section = name
        meaning = help_text.replace("|", "\\|")  # a bar would end the table cell
        shown = "''" if default == "" else default  # an empty code span would show nothing
        lines.append(f"| `{key}` | `{shown}` | {meaning} |")
    return "\n".join(lines) + "\n"


def page_with_tables(page: str) -> str:
    """``page`` with everything from the ``### `env``` heading replaced by ``tables()``."""
    at = page.find(START)
    if at < 0:
        raise SystemExit(f"{PAGE}: no {START!r} heading to write the tables under")
    return page[:at] + tables()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the page is stale")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    new = page_with_tables(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is stale: run python scripts/config_keys_doc.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
