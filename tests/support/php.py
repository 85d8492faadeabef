"""PHP's SoapClient and xmlrpc extension, run as real processes against a panel (Debian's
php-cli, php-soap and php-xmlrpc)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent.parent / "php"


def php_route(wsdl_url: str, version: str, ca_file: Path, request: dict[str, Any]) -> Any:
    """What PHP returned (`raw`) and how PHP typed it (`result`), or the SOAP fault it raised."""
    return _php("route.php", [wsdl_url, version, str(ca_file)], request)


def php_xmlrpc_route(url: str, ca_file: Path, request: dict[str, Any]) -> Any:
    """What PHP's xmlrpc extension decoded (`reply`) and PHP's type for each key (`types`)."""
    return _php("xmlrpc_route.php", [url, str(ca_file)], request)


def _php(script: str, arguments: list[str], request: dict[str, Any]) -> Any:
    completed = subprocess.run(
        ["php", str(SCRIPTS / script), *arguments],
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
