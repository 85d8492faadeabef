"""The Outbound Mail engine: durable queue, scheduling, routing, delivery and bounces.

Pure policy modules (routes, schedule, bounces, smtp replies) sit beside the I/O that uses them.
"""
