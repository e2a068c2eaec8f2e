"""Errors of the local development environment (``stream.devenv``).

Every failure carries what a developer needs to fix it without digging: which tool was missing
and how it is installed, or the tail of the log of the process that would not start.
"""

from __future__ import annotations

from stream.errors import StreamError


class DevEnvError(StreamError):
    """Base of every error raised by ``stream.devenv``."""


class ToolNotFoundError(DevEnvError):
    """A program the dev environment needs (java, mvn, redis-server, openssl) is missing."""


class JarResolveError(DevEnvError):
    """Maven could not resolve the Kafka broker's jars; the message ends with Maven's output."""


class PortInUseError(DevEnvError):
    """The port a server should listen on is taken by some other process.

    Raised before launching rather than after, because a client probe would otherwise happily
    talk to whatever else is listening there and report a healthy server that is not ours.
    """


class ServerStartError(DevEnvError):
    """A server exited early or did not answer before its deadline; the message has its log."""


class TlsUnsupportedError(ServerStartError):
    """The installed ``redis-server`` was built without TLS (``BUILD_TLS=no``)."""
