"""edge-bench: stage timing of the daemon's hot path and offline accuracy evaluation (classifier, WIDER, e2e)."""
