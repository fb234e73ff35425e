"""Settings and the stack file: where secrets come from, and what a wrong value says."""

import os

import pytest

from bot.frame.config import ConfigError, forget_secret_environment, load_settings, load_stack


def _stack_file(tmp_path, database: str):
    path = tmp_path / "flowstate.toml"
    path.write_text(f'[database]\ndsn = "postgresql://flowstate@127.0.0.1:5432/flowstate_ai"\n{database}')
    return path


def test_the_users_table_roles_default_to_user_and_admin(tmp_path):
    assert load_stack(_stack_file(tmp_path, ""), required=True).database.user_roles == ["user", "admin"]
    configured = load_stack(_stack_file(tmp_path, 'user_roles = ["user", "support", "admin"]'), required=True)
    assert configured.database.user_roles == ["user", "support", "admin"]


def test_a_user_role_that_a_command_could_never_set_is_refused_with_its_key(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_stack(_stack_file(tmp_path, 'user_roles = ["user", "Admin"]'), required=True)
    assert str(refused.value) == (
        f"stack file {tmp_path / 'flowstate.toml'}: database.user_roles: "
        "user roles must be lower case, without surrounding spaces; wrong: 'Admin'"
    )
    with pytest.raises(ConfigError, match=r"database\.user_roles: List should have at least 1 item"):
        load_stack(_stack_file(tmp_path, "user_roles = []"), required=True)


def test_the_stack_runtime_is_compose_unless_swarm_is_named_with_its_namespace(tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text('[stack]\ncompose_project = "flowstate"\n')
    settings = load_stack(path, required=True).stack
    assert (settings.runtime, settings.project) == ("compose", "flowstate")
    path.write_text('[stack]\nruntime = "swarm"\nnamespace = "flowstate"\ndocker_host = "unix:///run/manager.sock"\n')
    settings = load_stack(path, required=True).stack
    assert (settings.runtime, settings.project, settings.docker_host) == ("swarm", "flowstate", "unix:///run/manager.sock")
    for wrong, said in (
        ('runtime = "swarm"', 'stack: runtime "swarm" needs the Swarm stack\'s namespace (namespace = "NAME")'),
        ('namespace = "flowstate"', "stack: namespace is the Swarm stack's; with runtime \"compose\", name the project in compose_project"),
        ('runtime = "swarm"\nnamespace = "a b"', "stack: namespace 'a b' is not a Swarm stack name (letters, digits, _ . -)"),
        ('runtime = "kubernetes"', "stack.runtime: Input should be 'compose' or 'swarm'"),
    ):
        path.write_text(f"[stack]\n{wrong}\n")
        with pytest.raises(ConfigError) as refused:
            load_stack(path, required=True)
        assert str(refused.value) == f"stack file {path}: {said}", str(refused.value)


def test_the_deploy_section_defaults_to_the_guides_script_and_refuses_a_relative_directory(tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text(f'[deploy]\nworkdir = "{tmp_path}"\n')
    deploy = load_stack(path, required=True).deploy
    assert (deploy.command, deploy.timeout, deploy.env, deploy.migration_paths) == (
        ["./scripts/deploy-production.sh"], 900.0, {}, ["backend/migrations/"]
    )
    path.write_text('[deploy]\nworkdir = "srv/flowstate"\n')
    with pytest.raises(ConfigError, match=r"deploy\.workdir: srv/flowstate must be an absolute path"):
        load_stack(path, required=True)
    path.write_text(f'[deploy]\nworkdir = "{tmp_path}"\ncommand = "./deploy.sh --prod"\n')
    with pytest.raises(ConfigError, match=r"deploy\.command: Input should be a valid list"):
        load_stack(path, required=True)


def test_secrets_come_from_files_or_the_environment_and_a_wrong_file_is_one_line(tmp_path, monkeypatch):
    token, url = tmp_path / "bot-token", tmp_path / "database-url"
    token.write_text("xoxb-from-a-file\n")
    url.write_text("postgresql://bot:pw@127.0.0.1:5432/bot\n")
    monkeypatch.setenv("SLACK_BOT_TOKEN_FILE", str(token))
    monkeypatch.setenv("FLOWSTATE_DATABASE_URL_FILE", str(url))
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "from-the-environment")
    settings = load_settings(_env_file=None)
    assert settings.slack_bot_token.get_secret_value() == "xoxb-from-a-file"
    assert settings.database_url == "postgresql://bot:pw@127.0.0.1:5432/bot"
    assert settings.slack_signing_secret.get_secret_value() == "from-the-environment"

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-also-here")
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None)
    assert str(refused.value) == "SLACK_BOT_TOKEN_FILE: set either SLACK_BOT_TOKEN or SLACK_BOT_TOKEN_FILE, not both"
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    token.unlink()
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None)
    assert str(refused.value) == f"SLACK_BOT_TOKEN_FILE: cannot read {token} (No such file or directory)"
    token.write_text("\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None)
    assert str(refused.value) == f"SLACK_BOT_TOKEN_FILE: {token} is empty"


def test_the_secrets_leave_the_environment_once_read_so_no_process_the_bot_starts_inherits_them(monkeypatch):
    for name in [name for name in os.environ if name.startswith("FLOWSTATE_TEST_")]:
        monkeypatch.delenv(name)  # the test harness's own settings (FLOWSTATE_TEST_STACK, ...), never the bot's
    for name, value in (("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_SIGNING_SECRET", "s"), ("SLACK_APP_TOKEN", "xapp-1"),
                        ("FLOWSTATE_DATABASE_URL", "postgresql://bot:pw@127.0.0.1/bot"), ("FLOWSTATE_WORKERS", "2")):
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    forget_secret_environment()
    assert [name for name in os.environ if name.startswith(("SLACK_", "FLOWSTATE_"))] == ["FLOWSTATE_WORKERS"]
    assert settings.slack_app_token.get_secret_value() == "xapp-1" and settings.runner_threads == 2


def test_a_deploy_section_that_runs_scripts_as_an_unknown_user_is_refused(tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text(f'[deploy]\nworkdir = "{tmp_path}"\nrun_as = "nobody"\n')
    assert load_stack(path, required=True).deploy.run_as == "nobody"
    path.write_text(f'[deploy]\nworkdir = "{tmp_path}"\nrun_as = "no-such-user-here"\n')
    with pytest.raises(ConfigError, match=r"deploy\.run_as: there is no user 'no-such-user-here' on this machine"):
        load_stack(path, required=True)
