"""Version-control adapters: reading a file as it was at a revision."""
