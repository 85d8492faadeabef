"""PHP's SoapClient, run as a real process against a panel (Debian's php-cli and php-soap)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parent.parent / "php" / "route.php"


def php_route(wsdl_url: str, version: str, ca_file: Path, request: dict[str, Any]) -> Any:
    """What PHP returned (`raw`) and how PHP typed it (`result`), or the SOAP fault it raised."""
    completed = subprocess.run(
        ["php", str(SCRIPT), wsdl_url, version, str(ca_file)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout)


def php_types(described: dict[str, Any]) -> Any:
    """PHP's type names for a value as route.php describes it: {key: type or nested}."""
    if described["type"] in ("array", "list"):
        return {item["key"]: php_types(item["value"]) for item in described["items"]}
    return described["type"]
