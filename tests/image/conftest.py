"""The bot's image of this checkout, for the tests of the image and of the compose file."""

import subprocess

import pytest

from tests.conftest import ROOT

SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="session")
def bot_image(live_stack) -> str:
    """The image of this checkout; tests/image/build makes it when it is missing (seconds when it is not)."""
    result = subprocess.run([str(ROOT / "tests" / "image" / "build")], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"the bot's image could not be built (tests/image/build):\n{result.stderr[-4000:]}", pytrace=False)
    return result.stdout.strip().splitlines()[-1]
