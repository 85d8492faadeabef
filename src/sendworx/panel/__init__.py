"""The `sendworx panel` process: the NodeWorx API over HTTPS and HTTP.

`app.py` is the ASGI application; `tls.py` makes certificates; `server.py` runs it.
"""
