"""Real peers and process helpers shared by the integration tests.

Everything listens on loopback addresses and cleans up after itself.
"""
