"""Run mutmut 3 with another ``[mutmut:NAME]`` section of setup.cfg (docs/testing.md).

mutmut reads one fixed section, ``[mutmut]``. The repository keeps a second scope (the
COCO evaluation and copy-paste modules, with their own test selection) in
``[mutmut:evaluation]`` so that the numbers of each scope stay reproducible on their own:

    python tools/mutmut_scope.py evaluation run --max-children 1
    python tools/mutmut_scope.py evaluation results

Everything after the section name is passed to mutmut's command line unchanged. Both scopes
write to ``mutants/``; remove it (``rm -rf mutants``) when switching between them.
"""

from __future__ import annotations

import sys
from configparser import ConfigParser
from typing import Any


def section_reader(section: str, path: str = "setup.cfg"):
    """A mutmut config reader over ``[section]`` with mutmut's own type conversions."""
    parser = ConfigParser()
    parser.read(path)
    if not parser.has_section(section):
        raise SystemExit(f"{path} has no [{section}] section")

    def read(key: str, default: Any) -> Any:
        if not parser.has_option(section, key):
            return default
        value = parser.get(section, key)
        if isinstance(default, list):
            return [line for line in value.split("\n") if line]
        if isinstance(default, bool):
            return value.lower() in ("1", "t", "true")
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            return int(value)
        return value

    return read


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    import mutmut.configuration as configuration

    reader = section_reader(f"mutmut:{argv[1]}")
    configuration._config_reader = lambda: reader
    configuration.reset_config()
    from mutmut.__main__ import cli

    sys.argv = ["mutmut", *argv[2:]]
    return cli()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
