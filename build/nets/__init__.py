"""Network definitions in plain torch (torchvision cannot be imported beside the pinned torch)."""
