"""What `make package` writes deploys as is: the SAM template, translated to
CloudFormation offline, passes cfn-lint with no finding, and holds what a
production deployment needs."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.validate import check, lint, load, rules, translate
from tests.support.stack import make_command

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """What `make package` writes (it checks it too: the translation and cfn-lint)."""
    out = tmp_path_factory.mktemp("package") / "dist"
    made = subprocess.run(make_command("package", f"DIST={out}"), cwd=PROJECT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "AWS_DEFAULT_REGION"}, timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (out / "deployment.zip").stat().st_size > 0
    return out


@pytest.fixture(scope="module")
def sam(dist):
    return load(dist / "sam.yaml")


@pytest.fixture(scope="module")
def cfn(sam):
    return translate(sam)


def resources(template, kind):
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def test_the_translated_template_passes_cfn_lint_and_the_sizing_rules_with_no_finding(cfn):
    assert lint(cfn) == []
    assert rules(cfn) == []


@pytest.mark.parametrize("mistake", [
    ("ProjectionTriggerMsk", "StartingPosition", "OLDEST"),
    ("ProjectionTriggerMsk", "BatchSize", 20_000),
    ("ProjectionDeadLetterQueue", "MessageRetentionPeriod", 1_209_601),
    ("ProjectCustomers", "Timeout", 901),
])
def test_a_planted_mistake_is_caught(sam, mistake):
    name, key, value = mistake
    broken = copy.deepcopy(sam)
    broken["Resources"][name]["Properties"][key] = value
    assert lint(translate(broken)) != []


def test_the_projection_is_triggered_by_kafka_with_retries_and_a_dead_letter_queue(cfn):
    triggers = resources(cfn, "AWS::Lambda::EventSourceMapping")
    assert {r.get("Condition") for r in triggers.values()} == {"UseMsk", "UseSelfManagedKafka"}
    queue_arn = {"Fn::GetAtt": ["ProjectionDeadLetterQueue", "Arn"]}
    for trigger in triggers.values():
        p = trigger["Properties"]
        assert p["FunctionName"] == {"Ref": "ProjectCustomers"} and p["Topics"] == ["customer-events"]
        assert p["StartingPosition"] == "TRIM_HORIZON" and p["BatchSize"] == {"Ref": "ProjectionBatchSize"}
        assert p["MaximumRetryAttempts"] == {"Ref": "ProjectionMaxRetryAttempts"}
        assert p["DestinationConfig"] == {"OnFailure": {"Destination": queue_arn}}
        assert p["ProvisionedPollerConfig"]["MinimumPollers"] >= 1  # what Kafka retry controls need
    assert triggers["ProjectionTriggerMsk"]["Properties"]["EventSourceArn"] == {"Ref": "KafkaArn"}
    self_managed = triggers["ProjectionTriggerSelfManagedKafka"]["Properties"]
    assert {"Type": "SASL_SCRAM_512_AUTH", "URI": {"Ref": "KafkaArn"}} in self_managed["SourceAccessConfigurations"]
    assert "ProjectionDeadLetterQueue" in resources(cfn, "AWS::SQS::Queue")


def test_every_function_runs_in_the_vpc_traced_with_a_role_of_its_own_and_no_password_in_sight(sam, cfn):
    functions = resources(cfn, "AWS::Lambda::Function")
    assert set(functions) == {"APIHandler", "RelayOutbox", "BackfillEvents", "ProjectCustomers"}
    roles = set()
    for function in functions.values():
        p = function["Properties"]
        assert p["VpcConfig"] == {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}}
        assert p["TracingConfig"] == {"Mode": "Active"}
        variables = p["Environment"]["Variables"]
        assert variables["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
        assert variables["KMS_KEY_ID"] == {"Fn::GetAtt": ["PersonalDataKey", "Arn"]}
        assert variables["EMAIL_HASH_SECRET_ARN"] == {"Ref": "EmailHashSecret"}
        assert "@" not in str(variables.get("DATABASE_URL", "")) and "password" not in str(variables).lower()
        roles.add(p["Role"]["Fn::GetAtt"][0])
    assert roles == {"ApiRole", "RelayRole", "BackfillRole", "ProjectionRole"}
    assert functions["APIHandler"]["Properties"]["Timeout"] < 29  # API Gateway gives up at 29 s
    assert "password" not in (PROJECT / ".chalice" / "config.json").read_text().lower()
    assert "DefaultRole" not in cfn["Resources"]


def branches(item) -> list:
    """Both branches of an Fn::If (less AWS::NoValue), or the item itself."""
    if isinstance(item, dict) and "Fn::If" in item:
        return [found for branch in item["Fn::If"][1:] if isinstance(branch, dict) and "Ref" not in branch
                for found in branches(branch)]
    return [item]


def statements(cfn, role):
    return [s for policy in cfn["Resources"][role]["Properties"]["Policies"] for p in branches(policy)
            for statement in p["PolicyDocument"]["Statement"] for s in branches(statement)]


def actions(cfn, role):
    found = set()
    for statement in statements(cfn, role):
        found.update([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    return found


def test_each_role_may_do_what_its_function_does_and_nothing_more(cfn):
    secret = {"Ref": "DatabaseSecretArn"}
    for role in ("ApiRole", "RelayRole", "BackfillRole", "ProjectionRole"):
        assert any(s["Resource"] == secret and s["Action"] == "secretsmanager:GetSecretValue"
                   for s in statements(cfn, role))
        assert all(s["Resource"] != "*" and "*" not in str(s["Action"]) for s in statements(cfn, role))
        assert not any("kms:" in str(s["Action"]) for s in statements(cfn, role))  # the key policies grant KMS
        managed = cfn["Resources"][role]["Properties"]["ManagedPolicyArns"]
        assert any("AWSLambdaVPCAccessExecutionRole" in str(arn) for arn in managed)
        assert any("AWSXRayDaemonWriteAccess" in str(arn) for arn in managed)
    assert actions(cfn, "ApiRole") == {"secretsmanager:GetSecretValue", "rds-db:connect", "s3:PutObject",
                                       *CONSOLE_READS_KAFKA}
    [put] = [s for s in statements(cfn, "ApiRole") if s["Action"] == "s3:PutObject"]
    assert put["Resource"] == {"Fn::Sub": "${ErasureLogBucket.Arn}/erasures/*"}
    assert "s3:PutObject" not in actions(cfn, "RelayRole") | actions(cfn, "ProjectionRole")
    assert {"kafka-cluster:Connect", "kafka-cluster:WriteData"} <= actions(cfn, "RelayRole")
    assert "sqs:SendMessage" not in actions(cfn, "RelayRole")
    assert actions(cfn, "BackfillRole") == actions(cfn, "RelayRole")
    assert {"kafka-cluster:ReadData", "kafka-cluster:AlterGroup", "sqs:SendMessage"} <= actions(cfn, "ProjectionRole")
    assert "kafka-cluster:WriteData" not in actions(cfn, "ProjectionRole")
    [send] = [s for s in statements(cfn, "ProjectionRole") if s["Action"] == "sqs:SendMessage"]
    assert send["Resource"] == {"Fn::GetAtt": ["ProjectionDeadLetterQueue", "Arn"]}


def key_grants(cfn, key):
    """What the key policy lets each principal do: {principal: {action: condition}}."""
    grants = {}
    for statement in (s for st in cfn["Resources"][key]["Properties"]["KeyPolicy"]["Statement"] for s in branches(st)):
        principals = statement["Principal"].get("AWS", statement["Principal"].get("Service"))
        for principal in principals if isinstance(principals, list) else [principals]:
            name = principal["Fn::GetAtt"][0] if "Fn::GetAtt" in principal else json.dumps(principal)
            found = grants.setdefault(name, {})
            for action in [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]:
                found[action] = statement.get("Condition")
    return grants


def test_the_personal_data_key_is_used_only_by_the_roles_that_need_it_and_only_with_the_context(cfn):
    grants = key_grants(cfn, "PersonalDataKey")
    context = {"StringEquals": {"kms:EncryptionContext:service": "customer-service",
                                "kms:EncryptionContext:purpose": "personal-data-keys"}}
    assert grants["ApiRole"] == {"kms:GenerateDataKey": context, "kms:Decrypt": context}
    assert grants["RelayRole"] == grants["BackfillRole"] == grants["ProjectionRole"] == {"kms:Decrypt": context}
    operator = json.dumps({"Ref": "OperatorRoleArn"})
    assert grants[operator] == {"kms:GenerateDataKey": context, "kms:Decrypt": context, "kms:ReEncryptTo": context,
                                "kms:ReEncryptFrom": None}
    (account,) = [name for name in grants if "root" in name]
    assert not {"kms:*", "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom"} & set(
        grants[account])  # the account administers it, and cannot use it
    assert all(not action.startswith(("kms:Decrypt", "kms:Encrypt", "kms:Generate", "kms:ReEncrypt"))
               for action in grants[account])


def test_logs_are_kept_for_a_while_encrypted_and_dead_letters_under_a_key_of_ours_behind_a_queue_policy(cfn):
    for function, group in (("APIHandler", "ApiLogGroup"), ("RelayOutbox", "RelayLogGroup"),
                            ("BackfillEvents", "BackfillLogGroup"), ("ProjectCustomers", "ProjectionLogGroup")):
        assert cfn["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": group}
        properties = cfn["Resources"][group]["Properties"]
        assert properties["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert properties["KmsKeyId"] == {"Fn::GetAtt": ["OperationsKey", "Arn"]}
    grants = key_grants(cfn, "OperationsKey")
    (logs,) = [name for name in grants if "logs." in name]
    assert all(condition and "kms:EncryptionContext:aws:logs:arn" in json.dumps(condition)
               for condition in grants[logs].values())
    queue = cfn["Resources"]["ProjectionDeadLetterQueue"]["Properties"]
    assert queue["KmsMasterKeyId"] == {"Fn::GetAtt": ["OperationsKey", "Arn"]} and "SqsManagedSseEnabled" not in queue
    (policy,) = [r["Properties"] for r in resources(cfn, "AWS::SQS::QueuePolicy").values()]
    assert policy["Queues"] == [{"Ref": "ProjectionDeadLetterQueue"}]
    statements = [s for st in policy["PolicyDocument"]["Statement"] for s in branches(st)]
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"AWS": {"Fn::GetAtt": ["ProjectionRole", "Arn"]}}
               and "sqs:SendMessage" in s["Action"] for s in statements)
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)


def test_the_erasure_log_outlives_the_stack_keeps_every_version_and_is_never_public(cfn):
    bucket = cfn["Resources"]["ErasureLogBucket"]
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(properties["PublicAccessBlockConfiguration"].values())
    assert cfn["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]["ERASURE_LOG_BUCKET"] == {
        "Ref": "ErasureLogBucket"}


def test_the_api_is_traced_and_the_kafka_producer_uses_msk_iam_on_tls(cfn):
    stage = next(iter(resources(cfn, "AWS::ApiGateway::Stage").values()))
    assert stage["Properties"]["TracingEnabled"] is True
    relay = cfn["Resources"]["RelayOutbox"]["Properties"]["Environment"]["Variables"]
    assert relay["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert relay["KAFKA_SASL_MECHANISM"] == {"Fn::If": ["UseMsk", "AWS_MSK_IAM", "SCRAM-SHA-512"]}


def _copy_at(sam, name, path):
    """A copy of the template, and in it the node that holds `path`'s last key."""
    broken = copy.deepcopy(sam)
    node = broken["Resources"][name]
    for key in path[:-1]:
        node = node[key]
    return broken, node


def without(sam, name, *path):
    broken, node = _copy_at(sam, name, path)
    del node[path[-1]]
    return broken


def with_value(sam, name, value, *path):
    broken, node = _copy_at(sam, name, path)
    node[path[-1]] = value
    return broken


@pytest.mark.parametrize("plant", [
    lambda sam: with_value(sam, "RelayOutbox", "proxy.example.com",
                           "Properties", "Environment", "Variables", "DATABASE_PROXY_ENDPOINT"),
    lambda sam: without(sam, "APIHandler", "Properties", "ReservedConcurrentExecutions"),
    lambda sam: with_value(sam, "ProjectCustomers", "4", "Properties", "Environment", "Variables", "DB_POOL_MAX_SIZE"),
    lambda sam: without(sam, "RestAPI", "Properties", "MethodSettings"),
    lambda sam: with_value(sam, "RestAPI", sam["Resources"]["RestAPI"]["Properties"]["MethodSettings"][:1],
                           "Properties", "MethodSettings"),
    lambda sam: with_value(sam, "DatabaseProxyTargetGroup", 100,
                           "Properties", "ConnectionPoolConfigurationInfo", "MaxConnectionsPercent"),
    lambda sam: without(sam, "RelayOutbox", "Properties", "LoggingConfig"),
    lambda sam: with_value(sam, "BackfillEvents", "proxy.example.com",
                           "Properties", "Environment", "Variables", "DATABASE_PROXY_ENDPOINT"),
    lambda sam: without(sam, "BackfillEvents", "Properties", "ReservedConcurrentExecutions"),
    lambda sam: without(sam, "ProjectionLogGroup", "Properties", "KmsKeyId"),
    lambda sam: without(sam, "ApiLogGroup", "Properties", "RetentionInDays"),
    lambda sam: without(sam, "ProjectionDeadLetterQueue", "Properties", "KmsMasterKeyId"),
    lambda sam: with_value(sam, "PersonalDataKey", [{"Effect": "Allow", "Principal": {"AWS": {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}, "Action": "kms:*", "Resource": "*"}],
        "Properties", "KeyPolicy", "Statement"),
], ids=["relay-through-the-proxy", "api-without-reserved-concurrency", "a-pool-per-container",
        "no-throttling", "public-routes-unthrottled", "proxy-takes-every-connection", "logs-to-the-default-group",
        "backfill-through-the-proxy", "backfill-without-reserved-concurrency",
        "logs-unencrypted", "logs-kept-forever", "dead-letters-under-an-aws-key", "the-account-uses-the-key"])
def test_a_planted_sizing_or_privacy_mistake_is_caught(sam, plant):
    assert check(plant(sam)) != []


def test_the_api_and_projection_can_reach_the_database_through_rds_proxy_and_the_relay_never(cfn):
    parameters = cfn["Parameters"]
    assert parameters["DatabaseProxyMode"]["AllowedValues"] == ["None", "Create", "Existing"]
    assert parameters["DatabaseProxyMode"]["Default"] == "None"
    proxy = cfn["Resources"]["DatabaseProxy"]
    assert proxy["Condition"] == "CreateDatabaseProxy"
    p = proxy["Properties"]
    assert p["EngineFamily"] == "POSTGRESQL" and p["RequireTLS"] is True
    assert p["Auth"] == [{"AuthScheme": "SECRETS", "SecretArn": {"Ref": "DatabaseSecretArn"}, "IAMAuth": "REQUIRED"}]
    target = cfn["Resources"]["DatabaseProxyTargetGroup"]["Properties"]
    assert target["DBClusterIdentifiers"] == [{"Ref": "DatabaseClusterIdentifier"}]
    assert target["ConnectionPoolConfigurationInfo"]["MaxConnectionsPercent"] < 100
    for function in ("APIHandler", "ProjectCustomers"):
        variables = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        endpoint = variables["DATABASE_PROXY_ENDPOINT"]["Fn::If"]
        assert endpoint[0] == "UseDatabaseProxy" and endpoint[2] == ""
        assert endpoint[1]["Fn::If"][1:] == [{"Fn::GetAtt": ["DatabaseProxy", "Endpoint"]},
                                             {"Ref": "DatabaseProxyEndpoint"}]
        assert variables["DATABASE_IAM_AUTH"] == {"Fn::If": ["UseDatabaseProxy", "true", "false"]}
    for function in ("RelayOutbox", "BackfillEvents"):
        variables = cfn["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert "DATABASE_PROXY_ENDPOINT" not in variables and "DATABASE_IAM_AUTH" not in variables
    assert "rds-db:connect" in actions(cfn, "ApiRole") & actions(cfn, "ProjectionRole")
    assert "rds-db:connect" not in actions(cfn, "RelayRole") | actions(cfn, "BackfillRole")
    [connect] = [s for s in statements(cfn, "ApiRole") if s["Action"] == "rds-db:connect"]
    assert "dbuser:${ProxyId}/*" in connect["Resource"]["Fn::Sub"][0]


def test_each_function_has_reserved_concurrency_one_connection_and_the_stage_is_throttled(cfn):
    reserved = {"APIHandler": "ApiReservedConcurrency", "ProjectCustomers": "ProjectionReservedConcurrency"}
    for function, parameter in reserved.items():
        p = cfn["Resources"][function]["Properties"]
        assert p["ReservedConcurrentExecutions"] == {"Ref": parameter}
        assert p["Environment"]["Variables"]["DB_POOL_MAX_SIZE"] == "1"
        assert cfn["Parameters"][parameter]["Default"] >= 1
    relay = cfn["Resources"]["RelayOutbox"]["Properties"]
    assert relay["Environment"]["Variables"]["DB_POOL_MAX_SIZE"] == "1"
    # Two containers per shard: a relay, and the next tick's overlapping it.
    assert relay["ReservedConcurrentExecutions"] == {"Fn::If": ["RelayShards8", 16, {"Fn::If": [
        "RelayShards4Plus", 8, {"Fn::If": ["RelayShards2Plus", 4, 2]}]}]}
    [stage] = resources(cfn, "AWS::ApiGateway::Stage").values()
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in stage["Properties"]["MethodSettings"]}
    assert settings["/*", "*"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["/*", "*"]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    for route in ("/~1health", "/~1openapi.json", "/~1asyncapi.json", "/~1docs", "/~1docs~1{asset}"):
        assert settings[route, "GET"]["ThrottlingRateLimit"] == {"Ref": "PublicThrottlingRateLimit"}


def test_the_zip_carries_compiled_bytecode_for_every_module_a_function_imports(dist):
    """Lambda's file system is read-only: without it, each new container compiles every module it imports."""
    import zipfile

    names = set(zipfile.ZipFile(dist / "deployment.zip").namelist())
    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}"

    def bytecode(module: str) -> str:
        folder, _, file = module.rpartition("/")
        return f"{folder}/__pycache__/{file[:-3]}.{tag}.pyc".lstrip("/")

    modules = [name for name in names if name.endswith(".py")]
    assert len(modules) > 500 and [m for m in modules if bytecode(m) not in names] == []
    assert {"app.py", bytecode("app.py"), bytecode("chalicelib/application.py")} <= names
    assert not any(name.startswith(("devstack/", "tests/", "bench/", "ops/", "deploy/")) for name in names)


def test_the_zip_carries_the_compiled_crc32c_kafka_python_checksums_record_batches_with(dist):
    """Without it kafka-python computes each batch's CRC-32C in Python: half
    the relay's producing thread, and its rate halved."""
    import zipfile

    names = zipfile.ZipFile(dist / "deployment.zip").namelist()
    assert [n for n in names if n.startswith("crc32c/_crc32c") and n.endswith(".so")], "no compiled crc32c"


def test_the_zip_carries_the_certificate_authorities_the_database_is_verified_against(dist):
    import zipfile

    with zipfile.ZipFile(dist / "deployment.zip") as package:
        bundle = package.read("chalicelib/certs/rds-ca-bundle.pem").decode()
    assert bundle == (PROJECT / "chalicelib/certs/rds-ca-bundle.pem").read_text()
    assert "Amazon RDS Root CA RSA2048 G1" in bundle or bundle.count("BEGIN CERTIFICATE") >= 90


def test_one_relay_schedule_per_shard_each_naming_its_shard(sam, cfn):
    import itertools

    relay = cfn["Resources"]["RelayOutbox"]["Properties"]
    assert relay["Environment"]["Variables"]["RELAY_SHARDS"] == {"Ref": "RelayShards"}
    assert cfn["Parameters"]["RelayShards"]["AllowedValues"] == [1, 2, 4, 8]
    [base] = [r for r in resources(cfn, "AWS::Events::Rule").values() if "Condition" not in r
              and r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["RelayOutbox", "Arn"]}]  # Chalice's: shard 0
    assert base["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    conditions = {"RelayShardSchedule": "RelayShards2Plus", "RelayMoreShardsSchedule": "RelayShards8"}
    shards = {}
    for name, condition in conditions.items():
        rule = cfn["Resources"][name]
        assert rule["Condition"] == condition and rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
        for target in rule["Properties"]["Targets"]:
            when, target = (target["Fn::If"][0], target["Fn::If"][1]) if "Fn::If" in target else (condition, target)
            assert target["Arn"] == {"Fn::GetAtt": ["RelayOutbox", "Arn"]}
            event = json.loads(target["InputTransformer"]["InputTemplate"].replace("<resources>", "[]"))
            assert event["detail-type"] == "Scheduled Event"  # what Chalice's schedule handler reads
            shards[event["detail"]["shard"]] = when
        permission = cfn["Resources"][f"{name}Permission"]
        assert permission["Condition"] == condition
        assert permission["Properties"]["SourceArn"] == {"Fn::GetAtt": [name, "Arn"]}
    needed = {1: "RelayShards2Plus", 2: "RelayShards4Plus", 3: "RelayShards4Plus"}
    assert shards == {**needed, **dict(zip(range(4, 8), itertools.repeat("RelayShards8")))}


def test_each_role_has_exactly_its_managed_policies_and_actions(cfn):
    managed = [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"},
               {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"}]
    exactly = {
        "ApiRole": {"secretsmanager:GetSecretValue", "rds-db:connect", "s3:PutObject", *CONSOLE_READS_KAFKA},
        "RelayRole": {"secretsmanager:GetSecretValue", "kafka-cluster:Connect", "kafka-cluster:DescribeCluster",
                      "kafka-cluster:DescribeTopic", "kafka-cluster:WriteData",
                      "kafka-cluster:WriteDataIdempotently"},
        "ProjectionRole": {"secretsmanager:GetSecretValue", "rds-db:connect", "sqs:SendMessage",
                           "kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers", "kafka-cluster:Connect",
                           "kafka-cluster:DescribeClusterDynamicConfiguration", "kafka-cluster:DescribeTopic",
                           "kafka-cluster:ReadData", "kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"},
    }
    exactly["BackfillRole"] = exactly["RelayRole"]
    for role, expected in exactly.items():
        properties = cfn["Resources"][role]["Properties"]
        assert properties["ManagedPolicyArns"] == managed, role
        assert actions(cfn, role) == expected, role
        assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s
                   for s in statements(cfn, role)), role
    roles = {name for name, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == {"ApiRole", "RelayRole", "BackfillRole", "ProjectionRole", "DatabaseProxyRole"}
    proxy = cfn["Resources"]["DatabaseProxyRole"]["Properties"]
    assert "ManagedPolicyArns" not in proxy and actions(cfn, "DatabaseProxyRole") == {"secretsmanager:GetSecretValue"}


CONSOLE_READS_KAFKA = ("kafka-cluster:Connect", "kafka-cluster:DescribeCluster", "kafka-cluster:DescribeTopic",
                       "kafka-cluster:ReadData", "kafka-cluster:DescribeGroup")


def test_the_console_reads_the_live_topic_and_handles_dead_letters_and_may_change_nothing_else(cfn):
    """Served by the API: its role reads the live topic and the projection's
    place (never writes, never moves a group), and the queue policy lets it
    replay and discard dead letters; where it signs in is a setting."""
    api = statements(cfn, "ApiRole")
    reads = [s for s in api if "kafka-cluster:ReadData" in s["Action"]]
    assert [s["Resource"]["Fn::Sub"][0].rsplit("/", 1)[1] for s in reads] == ["customer-events"]
    [group] = [s for s in api if s["Action"] == "kafka-cluster:DescribeGroup"]
    assert group["Resource"]["Fn::Sub"][0].endswith("group/${Name}/${Id}/customer-service-projection")
    assert not {"kafka-cluster:WriteData", "kafka-cluster:AlterGroup", "sqs:SendMessage"} & actions(cfn, "ApiRole")
    assert any(s["Action"] == "secretsmanager:GetSecretValue" and s["Resource"] == {"Ref": "MessageSigningSecret"}
               for s in api)  # signatures checked
    policy = cfn["Resources"]["ProjectionDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [console] = [s for st in policy for s in branches(st)
                 if s.get("Principal") == {"AWS": {"Fn::GetAtt": ["ApiRole", "Arn"]}}]
    assert console["Effect"] == "Allow" and set(console["Action"]) == {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    assert console["Resource"] == {"Fn::GetAtt": ["ProjectionDeadLetterQueue", "Arn"]}
    variables = cfn["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert variables["CONSOLE_CLIENT_ID"] == {"Ref": "ConsoleClientId"}
    assert variables["AUTH_AUTHORIZE_URL"] == {"Ref": "AuthAuthorizeUrl"}
    assert variables["AUTH_TOKEN_URL"] == {"Ref": "AuthTokenUrl"}
    assert variables["PROJECTION_DLQ_URL"] == {"Ref": "ProjectionDeadLetterQueue"}
    assert variables["MESSAGE_SIGNING_SECRET_ARN"] == {"Ref": "MessageSigningSecret"}
    assert all(cfn["Parameters"][name]["Default"] == "" for name in ("ConsoleClientId", "AuthAuthorizeUrl",
                                                                    "AuthTokenUrl"))


def _topics_written(cfn, role):
    return [s["Resource"]["Fn::Sub"][0].rsplit("/", 1)[1] for s in statements(cfn, role)
            if "kafka-cluster:WriteData" in s["Action"]]


def test_backfills_run_in_a_function_of_their_own_that_writes_only_to_the_backfill_topics(cfn):
    function = cfn["Resources"]["BackfillEvents"]["Properties"]
    assert function["Handler"] == "app.backfill_events" and function["Timeout"] == 900  # Lambda's most
    assert function["Role"] == {"Fn::GetAtt": ["BackfillRole", "Arn"]}
    assert function["ReservedConcurrentExecutions"] == 2
    variables = function["Environment"]["Variables"]
    assert variables["BACKFILL_TOPIC_PREFIX"] == {"Ref": "BackfillTopicPrefix"}
    assert variables["DB_POOL_MAX_SIZE"] == "1" and variables["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert variables["MESSAGE_SIGNING_SECRET_ARN"] == {"Ref": "MessageSigningSecret"}  # signed as the live ones
    assert cfn["Parameters"]["BackfillTopicPrefix"]["Default"] == "customer-events-backfill-"
    assert _topics_written(cfn, "BackfillRole") == ["${BackfillTopicPrefix}*"]
    assert _topics_written(cfn, "RelayRole") == ["customer-events"]
    # Invoked again every minute until each backfill is done (it resumes from its checkpoint).
    [rule] = [r for r in resources(cfn, "AWS::Events::Rule").values()
              if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": ["BackfillEvents", "Arn"]}]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    [invoking] = [r["Properties"] for r in resources(cfn, "AWS::Lambda::EventInvokeConfig").values()
                  if r["Properties"]["FunctionName"] == {"Ref": "BackfillEvents"}]
    assert invoking["MaximumRetryAttempts"] == 0 and invoking["MaximumEventAgeInSeconds"] <= 60


def _integrations(cfn) -> list[str]:
    body = cfn["Resources"]["RestAPI"]["Properties"]["Body"]
    return [operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            for methods in body["paths"].values() for operation in methods.values()
            if "x-amazon-apigateway-integration" in operation]


def test_api_gateway_invokes_the_api_functions_published_alias_never_latest(cfn):
    resources = cfn["Resources"]
    [alias] = [name for name, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"]
    assert resources[alias]["Properties"]["Name"] == "live"
    assert resources[alias]["Properties"]["FunctionName"] == {"Ref": "APIHandler"}
    version = resources[alias]["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    assert resources[version]["Type"] == "AWS::Lambda::Version"
    uris = _integrations(cfn)
    assert uris and all("${" + alias + "}/invocations" in uri for uri in uris), uris
    assert resources["APIHandlerInvokePermission"]["Properties"]["FunctionName"] == {"Ref": alias}
    assert resources["APIHandler"]["Properties"]["SnapStart"] == {"ApplyOn": {"Ref": "ApiSnapStart"}}
    assert cfn["Parameters"]["ApiSnapStart"]["Default"] == "None"


def test_snapstart_is_offered_only_when_packaged_for_python_3_12_or_later(sam):
    from deploy.snapstart import on_the_alias

    runtime = sam["Resources"]["APIHandler"]["Properties"]["Runtime"]
    offered = sam["Parameters"]["ApiSnapStart"]["AllowedValues"]
    packaged_for = tuple(int(part) for part in runtime.removeprefix("python").split("."))
    assert offered == (["None"] if packaged_for < (3, 12) else ["None", "PublishedVersions"])

    newer = copy.deepcopy(sam)
    for resource in newer["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["Runtime"] = "python3.12"
    newer["Parameters"]["ApiSnapStart"].update(AllowedValues=["None", "PublishedVersions"],
                                               Default="PublishedVersions")
    newer = on_the_alias(newer)
    assert newer["Parameters"]["ApiSnapStart"]["AllowedValues"] == ["None", "PublishedVersions"]
    translated = translate(newer)
    assert lint(translated) == [] and rules(translated) == []
    assert all("Alias" in uri for uri in _integrations(translated))
