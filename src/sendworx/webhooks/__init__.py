"""The webhook sender (`sendworx webhookd`): posts the events the engine queued
(shared/webhooks.py) to their endpoints, signed, at least once, in a process of its own so
that no receiver can slow delivery. `health.py` is when to retry and when to pause an
endpoint (pure); `poster.py` is one request under the rules (where it may go, how long, how
much is read); `sender.py` is the process."""
