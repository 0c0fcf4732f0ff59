#!/usr/bin/env python3
"""Writes charts/rotor/README.md from charts/rotor/README.md.tmpl, Chart.yaml and the
`# --` comments of values.yaml, in the style of helm-docs: a table Key | Type | Default |
Description, one row per documented key, in file order.

  chart-docs.py [--chart DIR]           write the README
  chart-docs.py [--chart DIR] --check   exit 1 (with a diff) when it is stale

Comment syntax (helm-docs'):
  # -- Description, continued on the following `#` lines up to the key.
  # -- (int or string) A type for keys whose default does not show it (null).
  # @default -- What the Default column says instead of the value.
Every key must be documented, itself or through a documented parent (whose row shows
the whole value); an undocumented key is an error naming it. YAML is parsed by Helm's
own parser (helm-python-sdk), so the defaults are what Helm sees.
"""
import difflib
import json
import re
import sys
from pathlib import Path

import helm_python

DEFAULT_CHART = Path(__file__).resolve().parent.parent / "charts" / "rotor"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+|\"[^\"]+\"):(?: |$)")


class DocsError(Exception):
    pass


def documented_keys(text):
    """[(path, description, type or None, default text or None)] in file order, and
    every key path seen (list items are values, not keys)."""
    rows, seen = [], []
    stack = []  # (indent, key)
    pending = None  # [description lines, type, default]
    list_indent = None  # inside a list value whose key sits at this indent
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if list_indent is not None:
            if not stripped or indent > list_indent or (
                indent == list_indent and stripped.startswith("- ")
            ):
                continue
            list_indent = None
        if not stripped:
            pending = None
            continue
        if stripped.startswith("# @default --"):
            if pending is None:
                raise DocsError(f"values.yaml:{number}: @default without a `# --` comment")
            pending[2] = stripped.split("--", 1)[1].strip()
            continue
        if stripped.startswith("# --"):
            text_ = stripped[4:].strip()
            type_ = None
            m = re.match(r"^\(([^)]+)\)\s*(.*)$", text_)
            if m:
                type_, text_ = m.group(1), m.group(2)
            pending = [[text_], type_, None]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending[0].append(stripped.lstrip("#").strip())
            continue
        m = KEY.match(line)
        if not m:
            raise DocsError(f"values.yaml:{number}: not a key line: {line!r}")
        key = m.group("key").strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = tuple(k for _, k in stack)
        seen.append(path)
        if pending is not None:
            rows.append((path, " ".join(w for w in pending[0] if w), pending[1], pending[2]))
            pending = None
        rest = line[m.end():].strip()
        if rest == "" or rest.startswith("#"):
            # A block value follows: a map (keys), or a list (items, skipped).
            following = text.splitlines()[number:]
            for nxt in following:
                s = nxt.strip()
                if not s or s.startswith("#"):
                    continue
                if s.startswith("- "):
                    list_indent = indent
                break
    return rows, seen


def value_at(values, path):
    for key in path:
        values = values[key]
    return values


def type_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def table(values_text):
    values = helm_python.values_from_yaml(values_text)
    rows, seen = documented_keys(values_text)
    documented = {path for path, *_ in rows}
    leaves = [p for p in seen if not any(q[: len(p)] == p and q != p for q in seen)]
    missing = [
        ".".join(p)
        for p in leaves
        if not any(p[:n] in documented for n in range(1, len(p) + 1))
    ]
    if missing:
        raise DocsError("values.yaml: no `# --` comment for " + ", ".join(missing))
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, description, type_, default in rows:
        value = value_at(values, path)
        shown = default if default is not None else json.dumps(value, separators=(",", ":"))
        lines.append(
            f"| {cell('.'.join(path))} | {cell(type_ or type_of(value))} | "
            f"`{cell(shown)}` | {cell(description)} |"
        )
    return "\n".join(lines)


def render(chart_dir):
    chart = helm_python.values_from_yaml((chart_dir / "Chart.yaml").read_text())
    template = (chart_dir / "README.md.tmpl").read_text()
    fields = {
        "name": chart["name"],
        "description": chart["description"],
        "version": chart["version"],
        "appVersion": chart["appVersion"],
        "kubeVersion": chart.get("kubeVersion", ""),
        "values": table((chart_dir / "values.yaml").read_text()),
    }
    out = re.sub(r"\{\{ (\w+) \}\}", lambda m: str(fields[m.group(1)]), template)
    header = "<!-- Generated by hack/chart-docs.py from README.md.tmpl and values.yaml: `make chart-docs`. -->\n"
    return header + out


def main():
    args = sys.argv[1:]
    chart_dir = DEFAULT_CHART
    if len(args) >= 2 and args[0] == "--chart":
        chart_dir, args = Path(args[1]), args[2:]
    if args not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        wanted = render(chart_dir)
    except DocsError as e:
        print(f"chart-docs: {e}", file=sys.stderr)
        return 1
    readme = chart_dir / "README.md"
    if args == ["--check"]:
        current = readme.read_text() if readme.exists() else ""
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(True), wanted.splitlines(True), "README.md", "generated"
            )
            sys.stderr.write("".join(diff))
            print(f"chart-docs: {readme} is stale: run `make chart-docs`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
