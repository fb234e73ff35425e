"""The live test stack can run more than once on one machine (issue 19.5): one setting, FLOWSTATE_TEST_STACK, names
it, and the shell scripts (tests/stack/name.sh) and the tests (tests/stack_setting.py) read it by the same rule."""

import os
import subprocess

import pytest

from tests.stack_setting import CACHE, DEFAULT, STACK_DIR, _port_offset


def _shell(name: str) -> subprocess.CompletedProcess:
    script = f'HERE={STACK_DIR}; . {STACK_DIR / "name.sh"}; echo "$PROJECT $PORT_OFFSET $STACK_FILES ${{STACK_PORT_POSTGRES:-}}"'
    env = {**os.environ, "FLOWSTATE_TEST_STACK": name}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", [DEFAULT, "flowstate-test-1", "flowstate-test-7"])
def test_the_scripts_and_the_tests_give_a_stack_the_same_project_ports_and_files(name):
    said = _shell(name)
    assert said.returncode == 0, said.stderr
    project, offset, files, postgres = (said.stdout.split() + [""])[:4]
    assert project == name and int(offset) == _port_offset(name)
    if name == DEFAULT:
        assert offset == "0" and files == str(STACK_DIR) and postgres == "", "the default stack is tests/stack as written"
    else:
        assert files == str(CACHE / "stacks" / name) and int(postgres) == 55432 + int(name.rsplit("-", 1)[1]) * 1000


@pytest.mark.parametrize("name", ["flowstate-test-8", "flowstate-test-0", "production"])
def test_any_other_name_is_refused_by_both_in_one_sentence(name):
    said = _shell(name)
    assert said.returncode == 2
    assert said.stderr.strip() == (f"FLOWSTATE_TEST_STACK={name}: name the live test stack flowstate-test (the default) "
                                   "or flowstate-test-1 to flowstate-test-7")
    with pytest.raises(ValueError, match="name the live test stack flowstate-test .the default. or flowstate-test-1 to flowstate-test-7"):
        _port_offset(name)
