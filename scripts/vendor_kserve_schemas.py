"""Extract the openAPIV3Schema of each served version of a CustomResourceDefinition into a
compact JSON file: deploy/kserve/schemas/<kind>.<version>.json (kind in lower case), gzipped
(`.json.gz`, reproducibly: no name or time in the header) when over GZIP_OVER bytes.

The schemas are what the API server validates (and prunes) a custom resource with. Any
`description` texts are dropped (documentation only; KServe's config/crd/full files are
generated without them); every other keyword, the `x-kubernetes-*` extensions included, is
kept as the CRD has it, keys sorted. Regenerate from a KServe checkout
(deploy/kserve/schemas/SOURCE.md names the files and the commit):

    python scripts/vendor_kserve_schemas.py path/to/serving.kserve.io_servingruntimes.yaml \
        path/to/serving.kserve.io_inferenceservices.yaml
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "kserve" / "schemas"
SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
GZIP_OVER = 500_000


def strip_descriptions(schema: Any) -> Any:
    """The schema without its `description` keywords (a property *named* description, under
    `properties`, stays)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key == "properties":
            out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = strip_descriptions(value)
        elif key in SUBSCHEMA_LISTS:
            out[key] = [strip_descriptions(sub) for sub in value]
        else:
            out[key] = value
    return out


def extract(crd_file: Path, folder: Path = SCHEMAS) -> list[Path]:
    """Write the schema of every served version of the CRD in crd_file; the paths written."""
    crd = yaml.safe_load(crd_file.read_text(encoding="utf-8"))
    if crd.get("kind") != "CustomResourceDefinition":
        raise SystemExit(f"{crd_file}: not a CustomResourceDefinition")
    kind = crd["spec"]["names"]["kind"].lower()
    written = []
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        data = (json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n").encode()
        path = folder / f"{kind}.{version['name']}.json"
        if len(data) > GZIP_OVER:
            data = gzip.compress(data, compresslevel=9, mtime=0)
            path = path.with_name(path.name + ".gz")
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name in argv:
        for path in extract(Path(name)):
            print(f"{path.name}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
