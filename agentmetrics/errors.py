"""Every exception agentmetrics raises on purpose, and every warning it gives, in one place.

The command line turns the exceptions into one ``Error: ...`` line: a :class:`ConfigError`
exits with code 2 (like a usage error), every other :class:`AgentMetricsError` with code 1.
It prints the warnings as one ``agentmetrics: ...`` line on stderr.
"""


class AgentMetricsError(Exception):
    """Base class: every error agentmetrics raises on purpose."""


class DatabaseError(AgentMetricsError):
    """The database file cannot be used (a directory, not SQLite, corrupt, missing)."""


class StorageError(DatabaseError):
    """A write could not be stored: locked too long, read-only, disk full, I/O error."""


class ReadOnlyDatabase(StorageError):
    """A write was attempted on a database opened read-only."""


class NotADatabase(DatabaseError):
    """The path is no file agentmetrics may use: a directory, FIFO or device, not SQLite."""


class ForeignDatabase(NotADatabase):
    """The file is another application's SQLite database: agentmetrics leaves it alone."""


class InvalidValue(AgentMetricsError, ValueError):
    """An argument has a value agentmetrics cannot store or use."""


class UnknownSession(AgentMetricsError, LookupError):
    """No orchestration or execution has the given session id."""


class UnknownAgent(AgentMetricsError, LookupError):
    """No agent execution has the given agent name."""


class DuplicateSession(AgentMetricsError):
    """A session id is already used by another orchestration or execution."""


class AlreadyFinished(AgentMetricsError):
    """The orchestration or execution has already been completed."""


class ConfigError(AgentMetricsError):
    """The config file is missing, not valid TOML, or holds an invalid setting or rule."""


class InvalidExport(AgentMetricsError):
    """An export file or database cannot be imported; nothing was written."""


class MissingDependency(AgentMetricsError):
    """An optional dependency needed for this feature is not installed."""


class MissingIndexesWarning(UserWarning):
    """A large file lacks the report indexes or rollups: reports work, only slower."""


class PendingWritesWarning(UserWarning):
    """Tracking writes wait in the journal beside the file: reports do not include them."""
