"""A deploy script cannot read the bot's secrets: not in its own environment, not through /proc of the bot or of its
runner (environ, mem: the bot's processes are not dumpable), not in any process's command line, not in the files it
can open. Real processes: the bot runs as a non-root user and so does its script; or the bot runs as root and its
script as that user (`[deploy] run_as`), which also keeps the secret files themselves from the script.

The script is a probe committed in the checkout: it records everything it could read into a JSON file."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bot.frame.blocks import to_text
from tests.bot.test_cli import _children
from tests.bot.test_slack_approvals import CHANNEL
from tests.conftest import ROOT, BotProcess, run
from tests.deploy.conftest import commit, git, wait_for

SCRIPT_USER = "flowstate-script"
CACHE = Path("/var/cache/flowstate-test")

PROBE = """\
import json, os, sys

def read(path):
    try:
        with open(path, "rb") as source:
            return source.read().decode("utf-8", "replace")
    except OSError as error:
        return f"DENIED {error.strerror}"

def opens(path):
    try:
        open(path, "rb").close()
        return "OPENED"
    except OSError as error:
        return f"DENIED {error.strerror}"

found = {"uid": os.getuid(), "pid": os.getpid(), "env": dict(os.environ), "proc": {}, "files": {}}
for name in os.listdir("/proc"):
    if name.isdigit():
        found["proc"][name] = {"environ": read(f"/proc/{name}/environ"), "cmdline": read(f"/proc/{name}/cmdline"),
                               "mem": opens(f"/proc/{name}/mem")}
for top in sys.argv[1:]:
    if not os.path.isdir(top):
        found["files"][top] = read(top)
    for folder, _dirs, files in os.walk(top, onerror=lambda error: found["files"].update({error.filename: f"DENIED {error.strerror}"})):
        for name in files:
            found["files"][os.path.join(folder, name)] = read(os.path.join(folder, name))
with open(os.environ["EVIDENCE"] + ".part", "w") as out:
    json.dump(found, out)
os.rename(os.environ["EVIDENCE"] + ".part", os.environ["EVIDENCE"])
"""


@pytest.fixture(scope="session")
def script_user() -> pwd.struct_passwd:
    """A non-root user of this machine for the bot and its scripts (made once, kept: it owns nothing outside the test)."""
    try:
        return pwd.getpwnam(SCRIPT_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        SCRIPT_USER], check=True, capture_output=True)
        return pwd.getpwnam(SCRIPT_USER)


@pytest.fixture
def base():
    """A folder outside pytest's (which only root may enter), for what the non-root user must reach."""
    path = Path(tempfile.mkdtemp(prefix="flowstate-secrets-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def user_python(script_user) -> tuple[str, dict[str, str]]:
    """The tests' Python, runnable by the non-root user, and the environment it needs. Where the tests' interpreter
    sits where only root may enter (pyenv under /root), a copy of it (not of its site-packages: the venv's are on
    PYTHONPATH) is kept in the tests' cache, world-readable, made once."""
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *site.getsitepackages()])}
    if _runs_as(script_user, sys.executable, env):
        return sys.executable, env
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    copy = CACHE / f"python-{sys.version.split()[0]}"
    if not copy.exists():
        base = Path(sys.base_prefix)
        building = Path(tempfile.mkdtemp(prefix=copy.name + ".", dir=CACHE))
        shutil.copytree(base / "lib" / f"python{version}", building / "lib" / f"python{version}",
                        ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__"))
        for lib in (base / "lib").glob("libpython*"):
            shutil.copy2(lib, building / "lib")
        (building / "bin").mkdir()
        shutil.copy2(Path(sys.base_prefix) / "bin" / f"python{version}", building / "bin")
        building.chmod(0o755)
        try:
            building.rename(copy)
        except OSError:  # another session made it first
            shutil.rmtree(building)
    python, env = str(copy / "bin" / f"python{version}"), {**env, "LD_LIBRARY_PATH": str(copy / "lib")}
    assert _runs_as(script_user, python, env), f"{python} does not run as {script_user.pw_name}"
    return python, env


def _runs_as(user: pwd.struct_passwd, python: str, env: dict[str, str]) -> bool:
    try:
        subprocess.run([python, "-c", "import bot.adapters.cli"], user=user.pw_uid, env=env, check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _own(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is not None:
        for folder, dirs, files in os.walk(path):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.chown(name, user.pw_uid, user.pw_gid)


@pytest.mark.parametrize("bot_runs_as", ["script-user", "root-with-run_as"])
def test_a_deploy_script_reads_no_secret_of_the_bot_by_any_path(bot_runs_as, base, script_user, user_python, slack_double, postgres_url):
    bot_user = script_user if bot_runs_as == "script-user" else None  # None: root, as the test runs
    token, signing = f"xoxb-{secrets.token_hex(12)}", f"signing-{secrets.token_hex(12)}"
    password = f"dbpass-{secrets.token_hex(8)}"
    database_url = postgres_url.replace("@", f":{password}@", 1)  # trust authentication: the password is only carried

    secret_dir = base / "secrets"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "bot-token").write_text(token + "\n")
    (secret_dir / "signing-secret").write_text(signing + "\n")
    for path in secret_dir.iterdir():
        path.chmod(0o600)
    home, cwd, evidence = base / "home", base / "cwd", base / "evidence"
    for folder in (home, cwd):
        folder.mkdir(mode=0o700)
    evidence.mkdir(mode=0o700)
    os.chown(evidence, script_user.pw_uid, script_user.pw_gid)

    repo = base / "flowstate-ai"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "The probe", {"probe.py": PROBE})
    for folder in (secret_dir, home, cwd, repo):
        _own(folder, bot_user)
    # Where the script looks: the secret files (only a script of another user can be kept from them), the bot's home
    # (its database when embedded, the deploys' output) and its working directory.
    python, python_env = user_python
    looked_at = [str(home), str(cwd)] + ([str(secret_dir / "bot-token"), str(secret_dir / "signing-secret")] if bot_user is None else [])
    run_as = f'run_as = "{SCRIPT_USER}"\n' if bot_user is None else ""
    stack_file = base / "flowstate.toml"
    stack_file.write_text(
        f'[deploy]\nworkdir = "{repo}"\ncommand = {json.dumps([python, "probe.py", *looked_at])}\n{run_as}'
        f'env = {{ EVIDENCE = "{evidence / "found.json"}", LD_LIBRARY_PATH = "{python_env.get("LD_LIBRARY_PATH", "")}" }}\n'
    )

    bot = BotProcess(
        cwd, slack_double, home, str(stack_file), user=bot_user and bot_user.pw_name, python=python, database_url=database_url,
        signing_secret=signing, **python_env,
        SLACK_BOT_TOKEN=None, SLACK_SIGNING_SECRET=None,
        SLACK_BOT_TOKEN_FILE=str(secret_dir / "bot-token"), SLACK_SIGNING_SECRET_FILE=str(secret_dir / "signing-secret"),
    )
    sender = bot.start()
    try:
        sender.slash("/restart", '--break-glass "see what a script can read"', "U0ADMIN", CHANNEL, response_url=slack_double.response_url("run"))
        found = json.loads(wait_for("the probe never wrote what it found", lambda: _read(evidence / "found.json"), timeout=90))
        runners = [pid for pid in _children(bot.process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert runners, "the bot's runner process was found"
        # As root, the test reads what the kernel shows of the bot: no secret that came from a file ever was in its
        # environment, and the one that came from the environment was taken out before the runner was started.
        bot_environ = Path(f"/proc/{bot.process.pid}/environ").read_text()
        runner_environ = Path(f"/proc/{runners[0]}/environ").read_text()
    finally:
        bot.close()

    assert found["uid"] == script_user.pw_uid != 0, "the script ran as the non-root user"
    everything = json.dumps(found)
    for secret in (token, signing, password):
        assert secret not in everything, f"the script read {secret[:8]}…"
    assert token not in bot_environ and signing not in bot_environ
    assert password not in runner_environ and "FLOWSTATE_DATABASE_URL" not in runner_environ
    assert set(found["env"]) <= {"PATH", "HOME", "LANG", "DOCKER_HOST", "EVIDENCE", "LD_LIBRARY_PATH"}, found["env"]
    for pid in [bot.process.pid, *runners]:
        seen = found["proc"][str(pid)]
        assert seen["environ"].startswith("DENIED") and seen["mem"].startswith("DENIED"), (pid, seen)
    own = found["proc"][str(found["pid"])]
    assert "EVIDENCE=" in own["environ"] and own["mem"] == "OPENED", "what the script may read, it did read"
    assert any(path.startswith(str(home)) for path in found["files"]), "it looked into the bot's home"
    if bot_user is None:
        for name in ("bot-token", "signing-secret"):
            assert found["files"][str(secret_dir / name)].startswith("DENIED"), name


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def test_the_request_names_the_user_the_script_runs_as(make_runtime, repo_world):
    repo_world.stack_file.write_text(repo_world.stack_file.read_text() + 'run_as = "nobody"\n')
    runtime = make_runtime(repo_world.stack(), admins=["UADMIN"])
    asked = run(runtime, "UADMIN", "/restart")
    request = to_text(runtime.approvals.render(runtime.jobs.get(1), "waiting"))
    assert asked.text.startswith("Request #1: `/restart` needs"), asked.text
    assert f"Runs `./scripts/deploy-production.sh` in `{repo_world.repo}` as user `nobody` (at most 120 s)" in request, request


@pytest.mark.process
def test_a_bot_that_is_not_root_runs_no_script_as_another_user_and_says_why(base, script_user, user_python):
    python, python_env = user_python
    work = base / "work"
    work.mkdir()
    os.chown(work, script_user.pw_uid, script_user.pw_gid)
    code = (
        "import sys; from pathlib import Path; from bot.frame.config import DeploySection; from bot.deploy.script import run_script; "
        "work = Path(sys.argv[1]); "
        "print(run_script(DeploySection(workdir=work, command=['true'], run_as='nobody'), work / 'out.log', lambda tail: None).error)"
    )
    said = subprocess.run([python, "-c", code, str(work)], user=script_user.pw_uid, env=python_env, capture_output=True, text=True,
                          timeout=60)
    assert said.stdout.strip() == f"true could not be started in {work}: [deploy] run_as = 'nobody' needs the bot to run as root", said
