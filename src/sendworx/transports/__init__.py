"""Wire formats for the API: each module only translates to and from the registry.

XML-RPC here; SOAP and JSON come next and follow the same shape.
"""
