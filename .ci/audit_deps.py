"""CI step: `pip-audit` on the installed environment (the test venv).

Exit 1 when a known vulnerability is found. When the vulnerability service cannot be reached, or
it could not audit some packages (a PyPI mirror without the JSON API answers 404 for every
package, and pip-audit then reports "No known vulnerabilities" having checked nothing), say so
plainly and exit 0: an unreachable service alone does not fail CI, but it never passes as a
clean audit either.

    python .ci/audit_deps.py            # the pip-audit next to this interpreter
    PIP_AUDIT=/path/to/pip-audit python .ci/audit_deps.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(os.environ.get("PIP_AUDIT") or Path(sys.executable).with_name("pip-audit"))
TIMEOUT_S = 300


def main() -> int:
    command = [str(PIP_AUDIT), "--local", "--format", "json", "--progress-spinner", "off"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        print(f"pip-audit: not installed at {PIP_AUDIT} (it is in the `test` extra)")
        return 1
    except subprocess.TimeoutExpired:
        print(f"pip-audit: NOT AUDITED - no answer from the vulnerability service in {TIMEOUT_S}s")
        return 0
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print("pip-audit: NOT AUDITED - it could not run to the end (service unreachable?):")
        print((result.stderr or result.stdout).strip()[-2000:])
        return 0
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
            print(f"VULNERABLE {dep['name']} {dep.get('version')}: {vuln['id']} (fixed in {fixes})")
    if skipped:
        print(
            f"pip-audit: NOT AUDITED {len(skipped)} of {len(dependencies)} packages - the "
            "vulnerability service did not know them or could not be reached "
            f"(e.g. {skipped[0].get('skip_reason')})"
        )
    print(f"pip-audit: {audited} packages audited, {len(vulnerable)} with known vulnerabilities")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
