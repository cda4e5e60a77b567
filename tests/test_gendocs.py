"""Completions and the man page are generated from the CLI and must match it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from llmos_cli.cli import _gendocs

REPO = _gendocs.REPO


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return _gendocs.render_all()


@pytest.mark.parametrize("rel", sorted(_gendocs.TARGETS))
def test_generated_file_is_up_to_date(rendered, rel):
    committed = (REPO / rel).read_text()
    assert committed == rendered[rel], f"{rel} is out of date with the commands: run `python -m llmos_cli.cli._gendocs`"


def test_every_command_is_in_completions_and_man(rendered):
    tree = _gendocs.command_tree()
    leaves = [c for c in _gendocs._all(tree) if not c.subcommands and len(c.path) > 1]
    assert leaves, "no commands registered"
    for c in leaves:
        name = c.path[-1]
        assert name in rendered["completions/llmos.bash"]
        assert f"-a {name} " in rendered["completions/llmos.fish"]
        assert " ".join(c.path).replace("-", "\\-") in rendered["man/llmos.1"]


def _syntax_check(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_bash_completion_parses_and_completes(tmp_path):
    script = REPO / "completions/llmos.bash"
    # Complete "llmos ins<TAB>" for real in bash.
    probe = f'source {script}; COMP_WORDS=(llmos ins); COMP_CWORD=1; _llmos; printf "%s\\n" "${{COMPREPLY[@]}}"'
    res = _syntax_check(["bash", "-c", probe])
    assert res.returncode == 0, res.stderr
    assert "install" in res.stdout.split()


@pytest.mark.parametrize("shell,rel", [("zsh", "completions/_llmos"), ("fish", "completions/llmos.fish")])
def test_zsh_and_fish_completions_parse(shell, rel):
    exe = shutil.which(shell)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{shell} is not installed; .ci/run installs it (apt-get install {shell})")
        pytest.skip(f"{shell} is not installed here (CI installs it and runs this check)")
    res = _syntax_check([exe, "-n", str(REPO / rel)])
    assert res.returncode == 0, res.stderr


def test_man_page_renders():
    if shutil.which("man") is None:
        pytest.fail("man is not installed")
    res = subprocess.run(
        ["man", "-l", str(REPO / "man/llmos.1")], capture_output=True, text=True, timeout=60, env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin", "COLUMNS": "100"}
    )
    assert res.returncode == 0, res.stderr
    assert "EXIT STATUS" in res.stdout
    assert "UNSATISFIABLE" in res.stdout


def test_every_exit_code_is_described_in_the_man_page():
    from llmos_cli.errors import ExitCode

    missing = [c.name for c in ExitCode if not _gendocs.EXIT_HELP.get(c.name)]
    assert missing == [], f"add a line for {missing} to EXIT_HELP in llmos_cli/cli/_gendocs.py"
