"""An authoritative DNS server on loopback (UDP, dnspython) for MX, A and AAAA answers.

Names without any record answer NXDOMAIN; names with records of other types answer empty.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import defaultdict
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DNSServer:
    def __init__(self, port: int = 0) -> None:
        self._records: dict[str, dict[str, list[str]]] = defaultdict(dict)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.queries: list[tuple[str, str]] = []

    def add(self, name: str, record_type: str, *values: str) -> None:
        key = name.lower().rstrip(".") + "."
        self._records[key].setdefault(record_type, []).extend(values)

    def publish_dkim(self, *keys: Any) -> dict[str, str]:
        """Each DKIM key's TXT record as its owner would publish it (255-byte strings); the
        record texts by name."""
        records = {}
        for key in keys:
            self.add(key.record_name, "TXT", " ".join(f'"{s}"' for s in key.record_strings))
            records[key.record_name] = key.record_text
        return records

    def mx(self, domain: str, *exchanges: tuple[int, str, str]) -> None:
        """MX records for `domain`, each (preference, host name, IPv4 address) with its A record."""
        for preference, host, address in exchanges:
            self.add(domain, "MX", f"{preference} {host}.")
            self.add(host, "A", address)

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().lower()
            record_type = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, record_type))
            if name not in self._records:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif record_type in self._records[name]:
                response.answer.append(
                    dns.rrset.from_text_list(
                        question.name, 60, "IN", record_type, self._records[name][record_type]
                    )
                )
            self._sock.sendto(response.to_wire(), peer)

    def __enter__(self) -> DNSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(2)
