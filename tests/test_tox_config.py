"""tox.ini: the launchers that run in the shared ``test`` environment build it before using it.

``tox exec`` skips the package install, so on a fresh clone (no ``.tox/test`` yet) a launcher that only
calls ``tox exec -e test`` finds no pytest and fails; ``tox run -e test --notest`` first creates the
environment (or reinstalls the checkout's package into it) without running the tests.
"""

import configparser
from pathlib import Path

import pytest

TOX_INI = Path(__file__).resolve().parents[1] / "tox.ini"


def launcher_commands(env: str) -> list[str]:
    """The command lines of ``[testenv:ENV]``, one per line, in order."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(TOX_INI)
    return [line.strip() for line in config[f"testenv:{env}"]["commands"].splitlines() if line.strip()]


@pytest.mark.parametrize("env", ["bench", "report"])
def test_launcher_builds_the_shared_environment_before_exec(env):
    commands = launcher_commands(env)
    execs = [i for i, line in enumerate(commands) if line.startswith("tox exec")]
    assert execs, f"{env} runs nothing in the test environment"
    assert commands[0].split() == ["tox", "run", "-q", "-e", "test", "--notest"]
    assert all(i > 0 for i in execs)


def test_launchers_install_nothing_of_their_own():
    config = configparser.ConfigParser(interpolation=None)
    config.read(TOX_INI)
    for env in ("bench", "report"):
        assert config[f"testenv:{env}"]["skip_install"].strip() == "{[launcher]skip_install}"
    assert config["launcher"]["skip_install"].strip() == "true"
