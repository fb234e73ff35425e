"""The stack file: what a wrong value says."""

import pytest

from bot.config import ConfigError, load_stack


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
