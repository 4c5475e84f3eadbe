"""What the service does, one module per job, each taking the container's
parts (chalicelib.bootstrap) and imported only by the functions that use it."""
