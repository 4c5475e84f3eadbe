"""The HTTP side of the service: parsing requests and shaping answers."""
