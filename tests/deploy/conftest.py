"""The deploy test world: a Git repository made by each test (commits that change what a frontend serves at
/health), a deploy script that recreates that frontend from the checkout, and a Compose project of our own,
`flowstate-deploytest` (frontend on 127.0.0.1:58101, host networking; beside another live stack its name and port
follow FLOWSTATE_TEST_STACK's), so the shared test stack is never touched."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.frame.config import load_stack
from tests import stack_setting

PROJECT = stack_setting.project("flowstate-deploytest")
PORT = stack_setting.port(58101)
IMAGE = "localhost/flowstate-test/busybox:current"

COMPOSE = f"""\
version: "2.4"
services:
  frontend:
    image: {IMAGE}
    network_mode: host
    init: true
    entrypoint: ["httpd", "-f", "-p", "127.0.0.1:{PORT}", "-h", "/site"]
    volumes:
      - ./www:/site:ro
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{PORT}/health"]
      interval: 1s
      timeout: 1s
      retries: 2
      start_period: 1s
  noisy:
    image: {IMAGE}
    network_mode: host
    init: true
    entrypoint:
      - sh
      - -c
      - >-
        i=0; while true; do i=$$((i+1));
        echo "GET /api/items/$$i 200 12ms";
        if [ $$((i % 10)) -eq 0 ]; then echo "ERROR request $$i failed: db timeout password=hunter2"; fi;
        sleep 0.05; done
"""

# The operator guide's script: recreate the frontend from what is checked out. DEPLOY_LOG records each run;
# a DEPLOY_HOLD file holds it for that many seconds first (a slow deploy, for the timeout and kill tests).
DEPLOY_SCRIPT = f"""\
#!/bin/sh
set -eu
commit=$(git rev-parse HEAD)
echo "deploying $commit"
if [ -n "${{DEPLOY_LOG:-}}" ]; then echo "$commit" >> "$DEPLOY_LOG"; fi
if [ -n "${{DEPLOY_HOLD:-}}" ] && [ -e "$DEPLOY_HOLD" ]; then
    echo "holding for $(cat "$DEPLOY_HOLD") s"
    sleep "$(cat "$DEPLOY_HOLD")" &
    echo $! > "$DEPLOY_HOLD.pid"
    wait
fi
echo "bot settings seen: ${{SLACK_BOT_TOKEN:+token}}${{SLACK_SIGNING_SECRET:+secret}}${{FLOWSTATE_HOME:+home}}."
echo "api_key=s3cr3t-value"
docker-compose -p {PROJECT} -f docker-compose.yml up -d --force-recreate --no-deps frontend 2>&1
echo "deployed $commit"
"""


# The API behind the edge, a CGI of the frontend's httpd: it answers 500 while the checkout holds www/fail-api and
# logs every request as nginx's combined format does (to httpd's stderr: the container's log, read as the edge's).
API_CGI = """\
#!/bin/sh
if [ -e /site/fail-api ]; then status="500 Internal Server Error"; else status="200 OK"; fi
printf '127.0.0.1 - - [%s] "%s %s HTTP/1.1" %s 3 "-" "%s"\\n' "$(date -u '+%d/%b/%Y:%H:%M:%S +0000')" \\
    "$REQUEST_METHOD" "$REQUEST_URI" "${status%% *}" "$HTTP_USER_AGENT" >&2
printf 'HTTP/1.1 %s\\r\\nContent-Type: application/json\\r\\n\\r\\n{}\\n' "$status"
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dana Deployer", "GIT_AUTHOR_EMAIL": "dana@example.com",
           "GIT_COMMITTER_NAME": "Dana Deployer", "GIT_COMMITTER_EMAIL": "dana@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str | None]) -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            git(repo, "rm", "-q", "--cached", name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name.endswith(".sh") or "/cgi-bin/" in name:
            path.chmod(0o755)
        git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def served() -> str | None:
    """What the frontend's /health says, or None when it does not answer 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as response:
            return response.read().decode().strip()
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class World:
    repo: Path
    commits: dict[str, str]  # v1, v2, v3 (adds a migration) on main; broken (no /health), failapi (API 500s) on their own branches
    deploy_log: Path
    hold: Path
    stack_file: Path

    def stack(self):
        return load_stack(self.stack_file, required=True)

    def deployed(self) -> list[str]:
        """The commits the deploy script ran for, in order."""
        return self.deploy_log.read_text().split() if self.deploy_log.exists() else []

    def checkout(self, name: str) -> None:
        git(self.repo, "checkout", "-q", "--detach", self.commits[name])


def make_repo(repo: Path) -> dict[str, str]:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    commits = {
        "v1": commit(repo, "First release", {
            "docker-compose.yml": COMPOSE, "scripts/deploy-production.sh": DEPLOY_SCRIPT, "www/health": "version v1\n",
            "www/cgi-bin/api": API_CGI,
            "backend/migrations/0001_users.sql": "CREATE TABLE users (id serial);\n",
        }),
        "v2": commit(repo, "Faster search", {"www/health": "version v2\n"}),
        "v3": commit(repo, "Add user roles", {"www/health": "version v3\n", "backend/migrations/0002_roles.sql": "ALTER TABLE users ADD role text;\n"}),
    }
    git(repo, "checkout", "-q", "-b", "broken")
    commits["broken"] = commit(repo, "Break the health endpoint", {"www/health": None})
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-q", "-b", "failapi")
    commits["failapi"] = commit(repo, "Turn on fail-api", {"www/fail-api": "every API call answers 500\n"})
    git(repo, "checkout", "-q", "main")
    git(repo, "tag", "v1", commits["v1"])
    return commits


def write_stack_file(path: Path, repo: Path, deploy_log: Path, hold: Path, timeout: float = 120, project: str | None = PROJECT) -> None:
    compose = f'compose_project = "{project}"\n' if project else ""
    edge = '[edge]\ncompose_service = "frontend"\nmin_requests = 5\n\n' if project else ""
    path.write_text(
        f'[stack]\n{compose}app_services = ["frontend"]\nhealthy_timeout = 10\nstable_seconds = 1\n\n{edge}'
        f'[deploy]\nworkdir = "{repo}"\ntimeout = {timeout}\n'
        f'env = {{ DEPLOY_LOG = "{deploy_log}", DEPLOY_HOLD = "{hold}" }}\n'
    )


@pytest.fixture(scope="session")
def deploy_project(live_stack):
    """Our own Compose project (its image comes from the live stack's build); removed at the end of the session."""
    yield PROJECT
    subprocess.run(["docker", "rm", "-f", *subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"], capture_output=True, text=True
    ).stdout.split()], capture_output=True)


def make_world(tmp_path: Path, project: str | None = PROJECT) -> World:
    repo = tmp_path / "flowstate-ai"
    commits = make_repo(repo)
    stack_file = tmp_path / "flowstate.toml"
    world = World(repo, commits, tmp_path / "deploys.log", tmp_path / "hold", stack_file)
    write_stack_file(stack_file, repo, world.deploy_log, world.hold, project=project)
    return world


@pytest.fixture
def world(tmp_path, deploy_project) -> World:
    return make_world(tmp_path)


@pytest.fixture
def repo_world(tmp_path) -> World:
    """The same repository, its stack file naming no Compose project: for what is decided before anything deploys."""
    return make_world(tmp_path, project=None)


def wait_for(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found
