"""Helm v4's own SDK (the PyPI package helm-python-sdk) for tests/chart.rs.

    helm.py lint CHART [VALUES]             the lint report, strict (warnings are errors)
    helm.py render CHART NAMESPACE [VALUES] the rendered objects, or the error Helm gave
    helm.py crds CHART                      the CRD files Helm loads from the chart

Prints one JSON document on stdout; the Rust test makes every assertion. A failure of Helm
itself (a chart that does not load, a value the schema refuses, a template that fails) is
data here: {"error": "..."}, so the test can assert on its message.
"""

import json
import re
import sys

import helm_python as helm

RELEASE = "proto"


def values_of(path):
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def documents(text):
    """The YAML documents of one rendered template, each parsed by Helm's YAML reader."""
    out = []
    for part in re.split(r"(?m)^---[ \t]*$", text):
        body = "\n".join(
            line for line in part.splitlines() if line.strip() and not line.lstrip().startswith("#")
        )
        if body:
            out.append(helm.values_from_yaml(part))
    return out


def render(chart_path, namespace, values_path):
    values = values_of(values_path)
    try:
        with helm.Chart.load(chart_path) as chart:
            chart.validate_schema(values)
            rendered = chart.render(values=values, name=RELEASE, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        return {"error": str(e)}
    objects, notes = [], ""
    for template in sorted(rendered):
        if template.endswith("NOTES.txt"):
            notes = rendered[template]
            continue
        for obj in documents(rendered[template]):
            objects.append({"template": template, "object": obj})
    return {"objects": objects, "notes": notes}


def crds(chart_path):
    with helm.Chart.load(chart_path) as chart:
        return {"crds": [{"filename": c["filename"], "data": c["data"]} for c in chart.crds]}


def main(argv):
    command, chart_path = argv[1], argv[2]
    if command == "lint":
        result = helm.lint(chart_path, values_of(argv[3] if len(argv) > 3 else None), strict=True)
    elif command == "render":
        result = render(chart_path, argv[3], argv[4] if len(argv) > 4 else None)
    elif command == "crds":
        result = crds(chart_path)
    else:
        raise SystemExit(f"unknown command {command!r}")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
