"""asyncio client for Switchyard, the sidecar gateway for agent messaging.

See :class:`Client`; README.md beside pyproject.toml has an example.
"""

from .client import (
    AttachRefused,
    Client,
    Event,
    Gap,
    GatewayEvent,
    NotAnswered,
    SwitchyardError,
    Welcome,
)

__all__ = [
    "AttachRefused",
    "Client",
    "Event",
    "Gap",
    "GatewayEvent",
    "NotAnswered",
    "SwitchyardError",
    "Welcome",
]
__version__ = "0.1.0"
