"""The documentation is kept true by tests: every example of the README and
of docs/ fenced as `sh` runs against `make run`'s stack, every setting the
code reads is named in docs/configuration.md, and the README's code map
names every module."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from devstack.postgres import free_port
from tests.support.stack import Output, interrupt, stack_env, start_stack, wait_for_http

PROJECT = Path(__file__).resolve().parents[2]
DOCUMENTS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
# Set by our own code for our own code, not by anyone configuring the service.
INTERNAL = {"AWS_CHALICE_CLI_MODE", "DEVSTACK_KMS_SEED_FILE"}


def examples(document: Path) -> list[str]:
    """The document's `sh` blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```", document.read_text(), re.S | re.M)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`make run` on ports of its own, named as a developer sets them."""
    state = tmp_path_factory.mktemp("docs") / "stack"
    ports = {"PORT": free_port(), "PGPORT": free_port(), "KAFKA_PORT": free_port()}
    process = start_stack(state, ports["PORT"], ports["PGPORT"], ports["KAFKA_PORT"])
    output = Output(process)
    try:
        wait_for_http(ports["PORT"], process)
        yield state, {**{name: str(port) for name, port in ports.items()},
                      "AWS_PORT": stack_env(state)["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]}
    finally:
        interrupt(process, output)


def run_examples(stack, script: str) -> subprocess.CompletedProcess:
    state, ports = stack
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "KAFKA_", "AWS_", "AUTH_"))}
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=PROJECT, capture_output=True,
                          text=True, timeout=240, env={**env, **ports, "DEVSTACK_DIR": str(state)})


@pytest.mark.parametrize("document", [d for d in DOCUMENTS if examples(d)], ids=lambda d: d.name)
def test_every_example_runs_as_written(stack, document):
    result = run_examples(stack, "\n".join(examples(document)))
    assert result.returncode == 0, f"{document.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_the_readme_tour_finds_the_customer_by_the_email_it_was_just_given_every_time(stack):
    """The search right after the change of email, asked for the caller's
    own write: never the empty answer of a read model not caught up yet."""
    first, tour = examples(PROJECT / "README.md")[:2]
    for _ in range(6):
        result = run_examples(stack, first + tour.split("curl -fsS \"$API/customer/$ID/events\"")[0]
                              + "printf '\\nID=%s\\n' \"$ID\"\n")
        assert result.returncode == 0, result.stderr
        customer = re.search(r"^ID=(\S+)$", result.stdout, re.M).group(1)
        found = result.stdout[result.stdout.index('{"customers"'):].split("}]}")[0].replace(" ", "")
        assert f'"id":"{customer}"' in found, result.stdout


def settings_read_by_the_code() -> set[str]:
    names = set()
    reads = r"(?:environ(?:\.get)?\(|environ\[|_int\(|_flag\(|getenv\(|port_setting\()"
    pattern = re.compile(reads + r'\s*"([A-Z][A-Z0-9_]+)"')
    for folder in ("chalicelib", "devstack", "ops", "bench", "deploy"):
        for path in (PROJECT / folder).rglob("*.py"):
            names.update(pattern.findall(path.read_text()))
    names.update(pattern.findall((PROJECT / "app.py").read_text()))
    return names - INTERNAL


def test_every_setting_is_named_in_the_configuration_page():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (PROJECT / "docs" / "configuration.md").read_text()))
    found = settings_read_by_the_code()
    assert len(found) > 40
    assert sorted(found - documented) == []


def test_the_code_map_names_every_module():
    readme = (PROJECT / "README.md").read_text()
    code_map = readme[readme.index("## Code map"):readme.index("## More")]
    rows = [line for line in code_map.splitlines() if line.startswith("| `")]
    modules = [path.relative_to(PROJECT).as_posix() for folder in ("chalicelib", "devstack", "ops", "deploy", "bench")
               for path in (PROJECT / folder).rglob("*.py") if path.name != "__init__.py"] + ["app.py"]

    def named(module: str) -> bool:
        folder, _, name = module.rpartition("/")
        return f"`{module}`" in code_map or any(
            line.startswith(f"| `{folder}/`") and f"`{name}`" in line for line in rows)

    assert sorted(m for m in modules if not named(m)) == []
