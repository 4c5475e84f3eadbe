"""Point API Gateway at the API function's published alias, so that Lambda
SnapStart, which applies to published versions only, serves the API.

`chalice package` integrates each route with the function's $LATEST
(`${APIHandler.Arn}`) and lets API Gateway invoke only that; the template
(deploy/template.yaml) publishes a version with every change under the
alias `live`. Here every integration and the invoke permission are moved
to the alias. SnapStart needs Python 3.12 or later: packaged for an older
runtime, the ApiSnapStart parameter allows only None.

    python -m deploy.snapstart dist/sam.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ALIAS = "APIHandler.Alias"
FIRST_RUNTIME = (3, 12)


def on_the_alias(sam: dict[str, Any]) -> dict[str, Any]:
    """The template with every route's integration and the invoke permission on the alias."""
    resources = sam["Resources"]
    body = resources["RestAPI"]["Properties"]["DefinitionBody"]
    for methods in body["paths"].values():
        for operation in methods.values():
            integration = operation.get("x-amazon-apigateway-integration") if isinstance(operation, dict) else None
            if integration and isinstance(integration.get("uri"), dict) and "Fn::Sub" in integration["uri"]:
                integration["uri"]["Fn::Sub"] = integration["uri"]["Fn::Sub"].replace("${APIHandler.Arn}",
                                                                                      "${" + ALIAS + "}")
    resources["APIHandlerInvokePermission"]["Properties"]["FunctionName"] = {"Ref": ALIAS}
    runtime = resources["APIHandler"]["Properties"]["Runtime"]
    if tuple(int(part) for part in runtime.removeprefix("python").split(".")) < FIRST_RUNTIME:
        parameter = sam["Parameters"]["ApiSnapStart"]
        parameter["AllowedValues"] = ["None"]
        parameter["Description"] = (f"Packaged for {runtime}: Lambda SnapStart needs Python 3.12 or later, so"
                                    " only None (package with Python 3.12+ to offer PublishedVersions).")
    return sam


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "dist/sam.yaml")
    sam = on_the_alias(yaml.safe_load(path.read_text()))
    left = yaml.safe_dump(sam).count("${APIHandler.Arn}")
    if left:
        raise SystemExit(f"{path}: {left} integrations still invoke $LATEST")
    path.write_text(yaml.safe_dump(sam, sort_keys=False, width=120))
    print(f"{path}: API Gateway invokes the alias live")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
