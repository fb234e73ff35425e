"""The four rooms hold: import-linter checks the layers and cycles declared in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_import_contracts_hold_type_only_imports_included():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


DOMAINS = ("access", "approvals", "backups", "changes", "deploy", "duties", "incidents")


def test_every_domain_keeps_its_tables_in_model_and_its_work_in_service():
    """Issue 19.3: the domains use the same file names (flows.py and views.py where there is a flow or a view)."""
    missing = [f"bot/{domain}/{name}" for domain in DOMAINS for name in ("model.py", "service.py")
               if not (ROOT / "bot" / domain / name).is_file()]
    assert missing == [], missing
    packages = sorted(path.parent.name for path in (ROOT / "bot").glob("*/__init__.py"))
    rooms = {"adapters", "frame", "jobs", "stack", "store"}
    assert sorted(set(packages) - rooms) == sorted(DOMAINS), "a new domain package is listed here, and keeps the names"
