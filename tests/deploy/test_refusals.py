"""Without a [deploy] section, or with a deploy directory that is not a Git checkout, nothing is asked for and nothing runs."""

from bot.frame.config import DeploySection, StackConfig
from bot.frame.roles import Role
from tests.conftest import grant, run


def test_without_a_deploy_section_restart_releases_and_rollback_say_so_and_make_no_request(make_runtime):
    runtime = make_runtime(StackConfig())
    grant(runtime, "UOP", Role.operator)
    for line in ("/restart", "/releases", "/rollback", "/rollback HEAD~1"):
        said = (f"{line.split()[0]} cannot run: the stack file (flowstate.toml) has no [deploy] section; "
                'README.md shows one under "Deploys and rollbacks".')
        assert run(runtime, "UOP", line).text == said, line
    assert runtime.jobs.get(1) is None


def test_a_deploy_directory_that_is_not_a_checkout_is_refused_in_one_sentence(make_runtime, tmp_path):
    runtime = make_runtime(StackConfig(deploy=DeploySection(workdir=tmp_path / "missing")))
    grant(runtime, "UOP", Role.operator)
    assert run(runtime, "UOP", "/restart").text == f"The deploy directory {tmp_path / 'missing'} does not exist."
    (tmp_path / "plain").mkdir()
    runtime = make_runtime(StackConfig(deploy=DeploySection(workdir=tmp_path / "plain")))
    grant(runtime, "UOP", Role.operator)
    reply = run(runtime, "UOP", "/rollback")
    assert reply.text.startswith(f"git rev-parse failed in {tmp_path / 'plain'}: ") and "Traceback" not in reply.text, reply.text
    assert runtime.jobs.get(1) is None


def test_a_deploy_scripts_output_in_the_request_message_stays_text():
    from bot.deploy.service import output_tail

    shown = output_tail("deploy.sh", ["ok", "```<!channel> <https://evil.example|click>`"])
    body = shown.split("\n", 1)[1]
    assert body.startswith("```") and body.endswith("```") and body.count("```") == 2, "one block that nothing closes"
    assert "<!channel>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt;" in shown
