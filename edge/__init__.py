"""Community gate edge gateway: reader -> presentation -> decision -> actuator -> outbox -> cloud."""

__version__ = "0.1.0"
