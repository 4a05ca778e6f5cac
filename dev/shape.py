#!/usr/bin/env python3
"""The shape check: no file over MAX_FILE lines and no function over MAX_FN lines in the
product code and its tooling (functions/, shared/, local/, cli/; test modules and test files
aside). Prints the
offenders and the longest of each, exits 1 when something is over.

Usage: dev/shape.py [--max-file 500] [--max-fn 80] [DIR ...]"""
import argparse
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip_tests(lines):
    """The lines before a trailing `#[cfg(test)]` module (tests aside)."""
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]") and i + 1 < len(lines) and lines[i + 1].startswith("mod "):
            return lines[:i]
    return lines


def functions(lines):
    """(name, first line, length) of each fn, by brace depth from its signature."""
    out = []
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j].split("//")[0])
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break
            j += 1
        if started:
            out.append((m.group(6), i + 1, j - i + 1))
        i += 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-file", type=int, default=500)
    ap.add_argument("--max-fn", type=int, default=80)
    ap.add_argument("dirs", nargs="*", default=["functions", "shared/src", "local/src", "cli/src"])
    a = ap.parse_args()
    over, longest_file, longest_fn = [], ("", 0), ("", 0)
    for d in [d for d in a.dirs if pathlib.Path(d).is_dir()]:
        for path in sorted(pathlib.Path(d).rglob("*.rs")):
            if "/tests/" in str(path) or path.name in ("tests.rs", "properties.rs"):
                continue
            lines = strip_tests(path.read_text().splitlines())
            if len(lines) > longest_file[1]:
                longest_file = (str(path), len(lines))
            if len(lines) > a.max_file:
                over.append(f"{path}: {len(lines)} lines (max {a.max_file})")
            for name, line, n in functions(lines):
                if n > longest_fn[1]:
                    longest_fn = (f"{path}:{line} {name}", n)
                if n > a.max_fn:
                    over.append(f"{path}:{line}: fn {name} is {n} lines (max {a.max_fn})")
    print(f"shape: longest file {longest_file[0]} ({longest_file[1]} lines), "
          f"longest fn {longest_fn[0]} ({longest_fn[1]} lines)")
    for o in over:
        print("  over: " + o)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
