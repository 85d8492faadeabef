"""What a process needs of systemd, without a library: telling it about readiness and status
(`sd_notify`: a datagram to $NOTIFY_SOCKET) and taking the sockets it opened for us (socket
activation: $LISTEN_FDS from descriptor 3). Outside systemd both do nothing.
"""

from __future__ import annotations

import os
import socket

LISTEN_FDS_START = 3


def notify(**fields: str) -> bool:
    """`notify(READY="1", STATUS="...")`; False when not run by systemd (or it is gone)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
            sender.sendto(message, address)
    except OSError:
        return False
    return True


def listen_sockets() -> list[socket.socket]:
    """The sockets systemd passed to this process (socket activation), in unit order; []
    when none were. The variables are dropped so children do not take them too."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sockets = []
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets
