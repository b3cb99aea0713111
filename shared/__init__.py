"""What the receiver and the workers share: settings, models, the AT client, the status policy.

This package imports neither `web` nor `worker`.
"""
