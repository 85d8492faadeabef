"""Which local account owns the other end of a TCP connection on loopback: the kernel's
answer (NETLINK_SOCK_DIAG, as `ss -e` asks it), never the client's words. An account that
talks SMTP to localhost instead of running sendmail is still that account, for its limits
and holds as for everything else.

One exact lookup by the connection's four addresses and ports (the client's socket, seen
from its side): no scan of every socket on the host.
"""

from __future__ import annotations

import socket
import struct

from sendworx.shared.addresses import client_address

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBBxI")  # inet_diag_req_v2 without its socket id
_SOCKET_ID = struct.Struct("!HH16s16s")  # ports and addresses, network order
_SOCKET_ID_TAIL = struct.Struct("=III")  # interface, cookie (host order)
_REPLY = struct.Struct("=BBBB")  # inet_diag_msg up to its socket id
_REPLY_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
_sequence = 0


def is_loopback(address: str) -> bool:
    parsed = client_address(address)
    return parsed is not None and parsed.is_loopback


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the client's socket of the connection `client` -> `server` on this
    host; None when the kernel does not know it (the client closed, or not on this host)."""
    global _sequence
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    source, destination = _packed(client[0], family), _packed(server[0], family)
    _sequence = (_sequence + 1) & 0xFFFFFFFF
    socket_id = _SOCKET_ID.pack(client[1], server[1], source, destination)
    socket_id += _SOCKET_ID_TAIL.pack(0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE)
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + socket_id
    size = _HEADER.size + len(body)
    header = _HEADER.pack(size, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, _sequence, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as netlink:
        netlink.settimeout(1.0)
        netlink.sendto(header + body, (0, 0))
        answer = netlink.recv(8192)
    if len(answer) < _HEADER.size:
        return None
    length, kind, _, sequence, _ = _HEADER.unpack_from(answer)
    if kind == NLMSG_ERROR or sequence != _sequence:
        return None
    offset = _HEADER.size + _REPLY.size + _SOCKET_ID.size + _SOCKET_ID_TAIL.size
    if length < offset + _REPLY_TAIL.size:
        return None
    _, _, _, uid, _ = _REPLY_TAIL.unpack_from(answer, offset)
    return int(uid)


def _packed(address: str, family: int) -> bytes:
    raw = socket.inet_pton(family, address.split("%", 1)[0])
    return raw.ljust(16, b"\0")
