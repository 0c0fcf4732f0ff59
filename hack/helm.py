#!/usr/bin/env python3
"""Renders or lints the chart with the real Helm v4 library (helm-python-sdk), for the
tests: there is no helm binary here.

  helm.py lint   CHART [VALUES_JSON]             -> the lint report as JSON
  helm.py render CHART NAMESPACE [VALUES_JSON] [RELEASE]  -> the manifests as YAML
"""
import json
import sys

import helm_python

# Lint as for a current cluster (the chart supports >= 1.20 and picks API versions by
# capability; the linter's default would exercise only the oldest branch).
KUBE_VERSION = "v1.30.0"


def main() -> int:
    cmd, chart = sys.argv[1], sys.argv[2]
    if cmd == "lint":
        values = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
        report = helm_python.lint(
            chart, values, strict=True, namespace="rotor-system", kube_version=KUBE_VERSION
        )
        print(json.dumps(report))
        return 0
    if cmd == "render":
        namespace = sys.argv[3]
        values = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
        release = sys.argv[5] if len(sys.argv) > 5 else "rotor"
        loaded = helm_python.Chart.load(chart)
        rendered = loaded.render(values, name=release, namespace=namespace, is_install=True)
        docs = []
        for path in sorted(rendered):
            text = rendered[path].strip()
            if path.endswith(".yaml") and text:
                docs.append(f"# Source: {path}\n{text}")
        print("\n---\n".join(docs))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
