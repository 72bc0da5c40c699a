#!/usr/bin/env python3
"""The values table of helm/campusbite-notify/README.md, generated from
values.yaml (defaults and their `# --` comments) and values.schema.json
(types, allowed values, descriptions).

    .ci/chart_readme.py --write    # rewrite the table between the markers
    .ci/chart_readme.py --check    # exit 1 if the README's table is stale

Every leaf value gets a row; a map or list whose key has a `# --` comment
is one row with its whole default. Standard library + PyYAML only.
"""

import argparse
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "helm", "campusbite-notify")
START, END = "<!-- values:start -->", "<!-- values:end -->"


def comments(values_text):
    """{dotted key: description} from `# --` comment blocks above keys."""
    found, stack, block = {}, [], []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            block = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if block:
                block.append(stripped[1:].strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not m or stripped.startswith("-"):
            block = []
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if block:
            found[".".join(k for _, k in stack)] = " ".join(block)
        block = []
    return found


def schema_at(schema, path):
    node = schema
    for key in path:
        node = (node.get("properties") or {}).get(key)
        if node is None:
            return {}
    return node


def type_of(schema_node, value):
    t = schema_node.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t:
        return t
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "object", type(None): "null"}[type(value)]


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def rows(values, schema, described, path=()):
    for key, value in values.items():
        p = path + (key,)
        dotted = ".".join(p)
        node = schema_at(schema, p)
        if isinstance(value, dict) and value and dotted not in described:
            yield from rows(value, schema, described, p)
            continue
        desc = described.get(dotted) or node.get("description", "")
        if "enum" in node:
            desc = (desc + " " if desc else "") + "One of: " + ", ".join(f"`{v}`" for v in node["enum"]) + "."
        default = json.dumps(value, ensure_ascii=False)
        yield f"| `{dotted}` | {type_of(node, value)} | `{cell(default)}` | {cell(desc)} |"


def table():
    with open(os.path.join(CHART, "values.yaml"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(CHART, "values.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    values = yaml.safe_load(text)
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += list(rows(values, schema, comments(text)))
    undocumented = [line.split("`")[1] for line in lines[2:] if line.endswith("|  |")]
    return "\n".join(lines) + "\n", undocumented


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = ap.parse_args()
    readme_path = os.path.join(CHART, "README.md")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    if START not in readme or END not in readme:
        print(f"{readme_path}: markers {START} / {END} missing", file=sys.stderr)
        return 1
    generated, undocumented = table()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    wanted = f"{head}{START}\n{generated}{END}{tail}"
    if undocumented:
        print("values without a description (add a `# --` comment or a schema description):", file=sys.stderr)
        for key in undocumented:
            print(f"  {key}", file=sys.stderr)
    if args.write:
        with open(readme_path, "w", encoding="utf-8") as f:
            f.write(wanted)
        print(f"{readme_path}: {generated.count(chr(10)) - 2} values")
        return 1 if undocumented else 0
    if wanted != readme:
        print(f"{readme_path} is stale: run .ci/chart_readme.py --write", file=sys.stderr)
        return 1
    print(f"{readme_path}: current ({generated.count(chr(10)) - 2} values)")
    return 1 if undocumented else 0


if __name__ == "__main__":
    sys.exit(main())
