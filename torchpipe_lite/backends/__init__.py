"""Built-in backends: importing this package registers every one of them by name."""

from . import builtin, testing  # noqa: F401  (imported for their registrations)
