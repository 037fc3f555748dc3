class DevClusterError(RuntimeError):
    """The dev cluster could not be built, started or stopped."""
