"""Cross-cutting worker behaviour (rate limits so far), each concern in its own module."""
