"""The floor every part of sendworx stands on, as Postfix's `src/global/`: the wire vocabulary
(calls, replies, errors, the XML-RPC reader), the queue, routes, settings, durable files and
the instance's layout. Nothing here imports any other part of sendworx.
"""
