"""Offline checks of the package `make package` writes: the SAM template
translated to CloudFormation as AWS would (aws-sam-translator), then linted
(cfn-lint), then held to this service's own rules of sizing, which no linter
knows (`rules`). cfn-lint on the SAM form alone lets mistakes through that
it catches on the translation.

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


def public_routes() -> list[str]:
    """The routes anyone may call, in API Gateway's MethodSettings spelling
    (/health is /~1health), from the API's own contract."""
    from chalicelib.api.openapi import document

    return ["/" + path.replace("/", "~1") for path, methods in document()["paths"].items()
            if any(operation.get("security") == [] for operation in methods.values())]


def rules(cloudformation: dict) -> list[str]:
    """Sizing for many containers and one database: what each deployment
    must hold, whatever its parameters."""
    findings = []
    resources = cloudformation["Resources"]
    functions = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    for name, function in functions.items():
        variables = function.get("Environment", {}).get("Variables", {})
        if "ReservedConcurrentExecutions" not in function:
            findings.append(f"{name}: no reserved concurrency; without it one function's traffic can take the"
                            " account's concurrency from the others")
        if variables.get("DB_POOL_MAX_SIZE") != "1":
            findings.append(f"{name}: DB_POOL_MAX_SIZE must be 1: a container serves one invocation at a time and"
                            " keeps one database connection")
    for name in ("RelayOutbox", "BackfillEvents"):  # a LISTEN, session advisory locks
        if "DATABASE_PROXY_ENDPOINT" in functions.get(name, {}).get("Environment", {}).get("Variables", {}):
            findings.append(f"{name}: connects to the database directly, never through RDS Proxy (its session"
                            " locks would pin a proxy connection)")
    for name, group in resources.items():
        if group["Type"] == "AWS::RDS::DBProxyTargetGroup":
            share = group["Properties"].get("ConnectionPoolConfigurationInfo", {}).get("MaxConnectionsPercent", 100)
            if not isinstance(share, int) or share >= 100:
                findings.append(f"{name}: MaxConnectionsPercent must leave connections for the relay, migrations"
                                " and operators (below 100)")
    for name, stage in resources.items():
        if stage["Type"] != "AWS::ApiGateway::Stage":
            continue
        throttled = {(s.get("ResourcePath"), s.get("HttpMethod")) for s in stage["Properties"].get("MethodSettings", [])
                     if "ThrottlingRateLimit" in s and "ThrottlingBurstLimit" in s}
        if ("/*", "*") not in throttled:
            findings.append(f"{name}: the stage has no throttling for all routes")
        for route in public_routes():
            if (route, "GET") not in throttled:
                findings.append(f"{name}: the public route {route} has no throttling of its own")
    return findings + privacy_rules(cloudformation)


# What a key's policy must not give the account as a whole: using the key.
_KEY_USE = ("kms:*", "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncrypt")


def privacy_rules(cloudformation: dict) -> list[str]:
    """Where logs, dead letters and personal data rest: encrypted under keys
    of ours, logs kept for a bounded time."""
    findings = []
    resources = cloudformation["Resources"]
    for name, function in resources.items():
        if function["Type"] != "AWS::Lambda::Function":
            continue
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup", {})
        properties = resources.get(group.get("Ref", "") if isinstance(group, dict) else "", {}).get("Properties", {})
        if "RetentionInDays" not in properties or "KmsKeyId" not in properties:
            findings.append(f"{name}: its logs must go to a log group of the template's with a retention and a KMS"
                            " key (LoggingConfig.LogGroup)")
    for name, queue in resources.items():
        if queue["Type"] == "AWS::SQS::Queue" and "KmsMasterKeyId" not in queue["Properties"]:
            findings.append(f"{name}: a queue is encrypted under a customer-managed KMS key (KmsMasterKeyId)")
    personal = resources.get("PersonalDataKey", {}).get("Properties", {}).get("KeyPolicy", {})
    for statement in personal.get("Statement", []):
        principal = json.dumps(statement.get("Principal", {}) if isinstance(statement, dict) else {})
        actions = statement.get("Action", []) if isinstance(statement, dict) else []
        actions = [actions] if isinstance(actions, str) else actions
        if ":root" in principal and any(a.startswith(_KEY_USE) for a in actions):
            findings.append("PersonalDataKey: the account as a whole may use the key; only the functions' roles"
                            " (and the operator role) may, each for what it does")
    return findings


def check(sam: dict) -> list[str]:
    """Every finding of cfn-lint and of the rules; empty when the template is fit to deploy."""
    cloudformation = translate(sam)
    return lint(cloudformation) + rules(cloudformation)


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "dist/sam.yaml")
    found = check(load(path))
    for finding in found:
        print(finding)
    print(f"{path}: {'clean' if not found else f'{len(found)} findings'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
