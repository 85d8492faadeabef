"""sendworx: an open implementation of the InterWorx Outbound Mail service.

The package holds the delivery engine, the injectors and the command line.
"""

__version__ = "0.1.0"
