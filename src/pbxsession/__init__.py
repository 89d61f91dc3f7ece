"""pbxsession: the whole life of a session with a PBX web API, for trio applications.

It models the IPCortex PBX JavaScript API 6.5 ``Auth`` object: log in
(``checkonly``, sub-IDs, a callback form), log out, the staged super-logout
``exit``, the PBX and feed hosts, the WebRTC password reset and the company
selection of multi-company administrators, all guarded by one explicit
lifecycle machine (see ``pbxsession._lifecycle`` and ``diagrams/``).
"""

from ._errors import (
    CommandError,
    InvalidArgumentError,
    InvalidHostError,
    InvalidStateError,
    LoginError,
    PbxError,
    PbxTimeoutError,
    PbxUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    SessionBusyError,
    SessionLostError,
    StaleCredentialError,
    StoreError,
    TlsError,
    UnknownCompanyError,
)
from ._fanout import FeedSubscription
from ._feed import BackoffPolicy, FeedStatistics, FullJitterBackoff
from ._lifecycle import (
    RULES,
    Condition,
    Event,
    Operation,
    Rule,
    State,
    rules_table,
    transitions,
)
from ._models import (
    Company,
    ExitReport,
    FeedDown,
    FeedEvent,
    FeedGap,
    FeedItem,
    FeedOptions,
    FeedStopped,
    FeedUp,
    Permission,
    SessionLost,
    StepOutcome,
    StepResult,
    User,
)
from ._session import Session, SessionStatistics, open_session
from ._timeouts import ExitTimeouts, Timeout
from .stores import MemoryStore, RedisStore, SessionStore, SqliteStore, default_store_path

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "BackoffPolicy",
    "CommandError",
    "Company",
    "Condition",
    "Event",
    "ExitReport",
    "ExitTimeouts",
    "FeedDown",
    "FeedEvent",
    "FeedGap",
    "FeedItem",
    "FeedOptions",
    "FeedStatistics",
    "FeedStopped",
    "FeedSubscription",
    "FeedUp",
    "FullJitterBackoff",
    "InvalidArgumentError",
    "InvalidHostError",
    "InvalidStateError",
    "LoginError",
    "MemoryStore",
    "Operation",
    "PbxError",
    "PbxTimeoutError",
    "PbxUnavailableError",
    "Permission",
    "PermissionDeniedError",
    "ProtocolError",
    "RedisStore",
    "Rule",
    "Session",
    "SessionBusyError",
    "SessionLost",
    "SessionLostError",
    "SessionStatistics",
    "SessionStore",
    "SqliteStore",
    "StaleCredentialError",
    "State",
    "StepOutcome",
    "StepResult",
    "StoreError",
    "Timeout",
    "TlsError",
    "UnknownCompanyError",
    "User",
    "__version__",
    "default_store_path",
    "open_session",
    "rules_table",
    "transitions",
]
