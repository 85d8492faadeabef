"""What the cluster manager raises: why a node could not be used or registered.

Its callers (the controllers) decide what each means on the wire: which input to blame, which
status to answer with.
"""

from __future__ import annotations


class ClusterError(Exception):
    """A node could not be used; the message says why, for the person who asked."""


class UnknownNode(ClusterError):
    """No node with this id is registered."""


class NodeUnreachable(ClusterError):
    """The node gave no API reply: unreachable, too slow, another certificate, not an API."""


class NodeRefusedKey(ClusterError):
    """The node answered 401 or 403 to the key it was registered with."""


class RegistrationRefused(ClusterError):
    """A node cannot be registered at that address (unreachable, itself, already there)."""


class KeyNotAccepted(RegistrationRefused):
    """The node answered, but refused the key offered with it."""
