"""Offline checks of the package `make package` writes: the SAM template
translated to CloudFormation as AWS would (aws-sam-translator), then linted
(cfn-lint). cfn-lint on the SAM form alone lets mistakes through that it
catches on the translation.

    python -m deploy.validate [dist/sam.yaml]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# What `aws cloudformation package` puts in place of the local zip.
UPLOADED_CODE = "s3://customer-service-artifacts/deployment.zip"


class _NoManagedPolicies:
    """The translator asks for AWS managed policies only to expand SAM policy
    names in a function's Policies; this template names none (each role is
    written out), so there is nothing to look up and no call to AWS."""

    def load(self) -> dict[str, str]:
        return {}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def translate(sam: dict) -> dict:
    from samtranslator.translator.transform import transform

    sam = json.loads(json.dumps(sam))
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = UPLOADED_CODE
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    return transform(sam, {}, _NoManagedPolicies())


def lint(cloudformation: dict) -> list[str]:
    """cfn-lint's findings, errors and warnings alike; empty when clean."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cloudformation.json"
        path.write_text(json.dumps(cloudformation, indent=1))
        result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", str(path)],
                                capture_output=True, text=True)
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 1:  # cfn-lint itself failed
        findings.append(result.stderr.strip())
    return findings


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "dist/sam.yaml")
    findings = lint(translate(load(path)))
    for finding in findings:
        print(finding)
    print(f"{path}: {'clean' if not findings else f'{len(findings)} findings'}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
