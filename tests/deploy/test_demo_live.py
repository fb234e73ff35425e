"""`make demo`'s [deploy] section: tests/stack/demo-deploy makes a throw-away checkout and a stack file over the live
test stack with which /releases, /restart with no service and /rollback can be tried, as a new user would."""

import re
import subprocess
from pathlib import Path

from bot.frame.config import load_stack
from bot.adapters.console import run_approved
from bot.frame.roles import Role
from tests import stack_setting
from tests.conftest import grant, run

STACK = Path(__file__).parents[1] / "stack"


def _demo_deploy(directory: Path) -> Path:
    done = subprocess.run([str(STACK / "demo-deploy"), str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def test_the_demo_stack_file_is_the_test_stack_s_plus_a_deploy_section_and_releases_and_rollback_work_on_it(make_runtime, live_stack, tmp_path):
    stack_file = _demo_deploy(tmp_path / "demo")
    assert stack_file == tmp_path / "demo" / "flowstate.toml"
    demo = load_stack(stack_file, required=True)
    assert demo.deploy.workdir == tmp_path / "demo" / "flowstate-ai"
    assert demo.model_dump(exclude={"deploy"}) == load_stack(stack_setting.STACK_FILE, required=True).model_dump(exclude={"deploy"})

    runtime = make_runtime(demo, admins=["UADMIN"])
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    listed = run(runtime, "UOP", "/releases").text
    assert re.search(r"▶️ \*current\* · \*#1\* recorded-at-start · `\w{10}` Add user roles · Demo Deployer · ", listed), listed

    asked = run(runtime, "UOP", "/rollback HEAD~2")
    assert "*To* `" in asked.text and "First release" in asked.text and "2 commits between them." in asked.text, asked.text
    assert "Migration files differ between them (`backend/migrations/0002_roles.sql`)" in asked.text
    number = re.match(r"Request #(\d+): ", asked.text).group(1)
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert reply.text.startswith("✅ Rolled back to "), reply.text
    deployed = (tmp_path / "demo" / "deploys.log").read_text().split()
    assert len(deployed) == 1 and reply.text.startswith(f"✅ Rolled back to {deployed[0][:7]}"), (deployed, reply.text)

    assert _demo_deploy(tmp_path / "demo") == stack_file, "running it again keeps the checkout where the demo left it"
    assert "First release" in run(runtime, "UOP", "/releases").text.splitlines()[1]
