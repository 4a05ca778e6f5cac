#!/usr/bin/env python3
"""Prints the commands of docs/deploying.md's code blocks marked TAG (```bash TAG), as one
bash script, so that the tests run the guide's own commands rather than copies of them.

    dev/guide.py offline        # what dev/deploy-check.sh runs
    dev/guide.py local-stack    # what tests/tests/it/doctor.rs runs against the local stack

With --arch ARCH, `Architecture=arm64` becomes `Architecture=ARCH` (a machine without the
aarch64 Rust target builds x86_64 instead: the same build for the other CPU).
"""
import argparse
import pathlib
import re
import sys

GUIDE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "deploying.md"


def blocks(text: str, tag: str) -> list[str]:
    """The bodies of the fenced blocks whose info string is `bash <tag>`."""
    pattern = re.compile(r"^```bash[ \t]+" + re.escape(tag) + r"[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
    return [m.group(1) for m in pattern.finditer(text)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag")
    parser.add_argument("--arch", choices=["arm64", "x86_64"], default="arm64")
    args = parser.parse_args()
    found = blocks(GUIDE.read_text(encoding="utf-8"), args.tag)
    if not found:
        print(f"dev/guide.py: no ```bash {args.tag} block in {GUIDE}", file=sys.stderr)
        return 1
    script = "".join(found).replace("Architecture=arm64", f"Architecture={args.arch}")
    sys.stdout.write(script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
