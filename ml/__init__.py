"""Models: segments, lifecycle, recommendations, send time."""
