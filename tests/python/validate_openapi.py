"""Validate an OpenAPI 3.1 document (JSON) with openapi-spec-validator.

Usage:
    validate_openapi.py [FILE]      # reads stdin when FILE is omitted

Prints "valid" and exits 0, or prints every error found and exits 1.
"""

from __future__ import annotations

import json
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator


def main() -> int:
    if len(sys.argv) > 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        if len(sys.argv) == 2:
            with open(sys.argv[1], encoding="utf-8") as f:
                document = json.load(f)
        else:
            document = json.load(sys.stdin)
    except (OSError, ValueError) as exc:
        print(f"not a readable JSON document: {exc}")
        return 1

    # The 3.1 validator, not the version-sniffing shortcut: the gateway promises 3.1, so a
    # document that declares another version must fail rather than be judged by other rules.
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    if not errors:
        print("valid")
        return 0
    for error in errors:
        # A JSON pointer, since path keys themselves contain slashes.
        pointer = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in error.absolute_path)
        print(f"{pointer or '/'}: {error.message}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
