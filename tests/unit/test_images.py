"""The Dockerfiles in images/ build small, pinned, non-root images whose entrypoint exists.

No container engine runs here, so the checks are static: each Dockerfile is parsed
and its stages, base images, final user, final-stage commands and entrypoint are
checked against the package (console script and typer commands) and against the
dependency pins in pyproject.toml and hack/setup.sh. Each check is also run on a
bad Dockerfile to show that it can fail.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from dockerfile_parse import DockerfileParser

from recplane.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("operator", "trainer", "serving")
# Anything that compiles or fetches sources has no place in a runtime image.
BUILD_TOOLS = (
    "gcc",
    "g++",
    "clang",
    "make",
    "cmake",
    "build-essential",
    "git",
    "python3-dev",
    "libc6-dev",
    "ninja-build",
    "cargo",
    "rustc",
)
PINNED_TAG = re.compile(r":[^:@/]*\d+\.\d+\.\d+[^:@/]*$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[dict[str, str]]


def parse(text: str) -> tuple[DockerfileParser, list[Stage]]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[Stage] = []
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            words = ins["value"].split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, instructions=[]))
        elif stages:
            stages[-1].instructions.append(ins)
    # dockerfile-parse substitutes the ARG defaults declared before the first FROM.
    for stage, resolved in zip(stages, parser.parent_images, strict=True):
        stage.base = resolved
    return parser, stages


def _exec_form(stage: Stage, instruction: str) -> list[str]:
    values = [i["value"] for i in stage.instructions if i["instruction"] == instruction]
    if not values:
        return []
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{instruction} must use the exec (JSON) form"
    return [str(v) for v in parsed]


def _console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _resolve(argv: list[str]) -> list[str]:
    """Walk `argv` down the typer app; returns the command path it reaches, or raises."""
    command = typer.main.get_command(app)
    path: list[str] = []
    for word in argv:
        # A group has sub-commands; a command's remaining words are its options.
        subcommands = getattr(command, "commands", None)
        if word.startswith("-") or subcommands is None:
            break
        if word not in subcommands:
            raise LookupError(f"`recplane {' '.join([*path, word])}` is not a command")
        command, path = subcommands[word], [*path, word]
    if getattr(command, "commands", None) is not None:
        raise LookupError(f"`recplane {' '.join(path)}` is a group, not a command")
    return path


def problems(text: str) -> list[str]:
    """Everything wrong with one Dockerfile, as sentences."""
    found: list[str] = []
    _, stages = parse(text)
    names = {s.name for s in stages if s.name}
    if len(stages) < 2:
        found.append("not multi-stage: build in one stage, copy the result into a clean final stage")
    for s in stages:
        if s.base not in names and not (DIGEST.search(s.base) or PINNED_TAG.search(s.base)):
            found.append(f"base image {s.base} is not pinned to an exact version or digest")
    if not stages:
        return [*found, "no FROM"]
    final = stages[-1]
    users = [i["value"] for i in final.instructions if i["instruction"] == "USER"]
    uid = users[-1].split(":")[0] if users else ""
    if not uid.isdigit() or int(uid) == 0:
        found.append(f"final stage must end as a numeric non-root USER, found {users[-1] if users else 'none'}")
    for ins in final.instructions:
        if ins["instruction"] == "RUN":
            words = set(re.split(r"[\s;&|=\"']+", ins["value"]))
            tools = sorted(words & set(BUILD_TOOLS))
            if tools:
                found.append(f"final stage installs build tools: {', '.join(tools)}")
            if "pip" in words and "install" in words:
                found.append("final stage runs pip install: install in the builder, copy the venv")
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            found.append(f"final stage copies from the build context ({ins['value']}): copy from the builder")
    entrypoint = _exec_form(final, "ENTRYPOINT")
    if not entrypoint or entrypoint[0] not in _console_scripts():
        found.append(f"ENTRYPOINT {entrypoint} is not a console script of pyproject.toml")
    else:
        try:
            _resolve(entrypoint[1:] + _exec_form(final, "CMD"))
        except LookupError as e:
            found.append(f"ENTRYPOINT + CMD: {e}")
    return found


def dockerfile(name: str) -> str:
    return (ROOT / "images" / f"{name}.Dockerfile").read_text()


@pytest.mark.parametrize("name", IMAGES)
def test_image_is_multi_stage_pinned_non_root_and_its_entrypoint_exists(name: str) -> None:
    assert problems(dockerfile(name)) == []


def test_a_bad_dockerfile_is_caught_by_every_check() -> None:
    bad = (
        "FROM python:3.11-slim\n"
        "RUN apt-get update && apt-get install -y gcc make\n"
        "COPY . /src\n"
        "RUN pip install /src\n"
        'ENTRYPOINT ["recplane"]\n'
        'CMD ["no-such-command"]\n'
    )
    found = problems(bad)
    assert any("not multi-stage" in p for p in found)
    assert any("python:3.11-slim is not pinned" in p for p in found)
    assert any("numeric non-root USER, found none" in p for p in found)
    assert any("build tools: gcc, make" in p for p in found)
    assert any("runs pip install" in p for p in found)
    assert any("copies from the build context" in p for p in found)
    assert any("`recplane no-such-command` is not a command" in p for p in found)


def test_root_user_and_unknown_console_script_are_refused() -> None:
    bad = (
        "FROM python:3.11.14-slim-bookworm AS builder\n"
        "FROM python:3.11.14-slim-bookworm\n"
        "COPY --from=builder /opt/recplane /opt/recplane\n"
        "USER 0\n"
        'ENTRYPOINT ["recplane-server"]\n'
    )
    found = problems(bad)
    assert any("non-root USER, found 0" in p for p in found)
    assert any("not a console script" in p for p in found)


def test_a_command_group_is_not_an_entrypoint() -> None:
    with pytest.raises(LookupError, match="is a group"):
        _resolve(["step"])


def _arg_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def _extra_pins(extra: str) -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for dep in deps:
        name, sep, version = dep.partition("==")
        if sep:
            pins[name.strip()] = version.strip()
    return pins


@pytest.mark.parametrize("name", ["trainer", "serving"])
def test_training_stack_matches_pyproject_and_setup_script(name: str) -> None:
    args = _arg_defaults(dockerfile(name))
    pins = _extra_pins("train")
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHREC_VERSION"] == pins["torchrec"]
    assert args["FBGEMM_VERSION"] == pins["fbgemm-gpu"]
    setup = (ROOT / "hack" / "setup.sh").read_text()
    assert f"torchmetrics=={args['TORCHMETRICS_VERSION']}" in setup
    # The cpu variant swaps in fbgemm-gpu-cpu exactly as hack/setup.sh does.
    assert re.search(r"cpu\)\s+fbgemm=\"fbgemm-gpu-cpu==\$\{FBGEMM_VERSION\}\"", dockerfile(name))
    assert "fbgemm-gpu-cpu==" in setup


def _runs(name: str) -> str:
    """The text of every RUN instruction of every stage (comments left out)."""
    parser, _ = parse(dockerfile(name))
    return "\n".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")


def test_operator_image_installs_no_training_or_serving_stack() -> None:
    runs = _runs("operator").lower()
    assert "pip install" in runs
    for heavy in ("torch", "fbgemm", "bentoml", "[train", "[serve"):
        assert heavy not in runs, f"the operator image must not install {heavy}"


def test_serving_image_has_serve_extra_and_no_dev_tools() -> None:
    runs = _runs("serving")
    assert "[serve]" in runs
    assert "dev]" not in runs and "pytest" not in runs


def _ignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent folder) decides."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").removeprefix("**/")
        if any(fnmatch.fnmatch(p, glob) or fnmatch.fnmatch(p.split("/")[-1], glob) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_sends_the_sources_and_keeps_the_rest_out() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in IMAGES:
        _, stages = parse(dockerfile(name))
        for ins in stages[0].instructions:
            if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
                for src in ins["value"].split()[:-1]:
                    assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
                    assert not _ignored(patterns, src), f"{name}: COPY {src} is excluded by .dockerignore"
    for kept_out in (".venv", ".git", "tests/unit", ".recplane/store", "bench", "recplane/api/__pycache__"):
        assert _ignored(patterns, kept_out), f"{kept_out} would be sent to the image build"
