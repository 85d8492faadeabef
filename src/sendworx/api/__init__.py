"""The NodeWorx API: controllers, actions, authentication and permissions.

Transports (XML-RPC now; SOAP and JSON later) only translate to and from this package.
"""
