"""Wire formats for the API: each module only translates to and from the registry.

XML-RPC and SOAP carry `route(auth, controller, action, input)`; the JSON API one call per URL.
"""
