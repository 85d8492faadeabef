"""Ways mail enters the queue: SMTP submission on loopback and a sendmail-compatible command.

Both write through `Queue.inject`, so both work whether or not the engine runs.
"""
