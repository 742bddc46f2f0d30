"""One exception family for everything expertmix reports to a user.

Every error says *where* (file, field, line when known) and *how to fix it*; the CLI prints
``str(error)`` and exits with the error's ``exit_code``.
"""
from __future__ import annotations


class ExpertmixError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for this family."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:  # message, then the fix on its own line
        return self.message if not self.hint else f"{self.message}\n  fix: {self.hint}"


class InputError(ExpertmixError):
    """Bad stems or bad command-line input (unreadable audio, empty folder, unknown role ...)."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint)


class PlanError(ExpertmixError):
    """A mix plan that is malformed or out of range. ``field`` is the dotted path of the bad value."""

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None, hint: str | None = None):
        self.file, self.field, self.line = file, field, line
        where = ":".join(str(p) for p in (file, line) if p is not None)
        loc = ", ".join(p for p in (where, f"field {field}" if field else None) if p)
        super().__init__(f"{loc}: {message}" if loc else message, hint=hint)


class RulebookError(PlanError):
    """A rule or genre file that does not load: file, line, rule id and field."""

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 rule_id: str | None = None, field: str | None = None, hint: str | None = None):
        self.rule_id = rule_id
        if rule_id:
            message = f"rule {rule_id}: {message}"
        super().__init__(message, file=file, field=field, line=line, hint=hint)


class ModelError(ExpertmixError):
    """A learned model that is missing, corrupt or does not match the descriptors."""

    exit_code = 4


class RenderError(ExpertmixError):
    """The DSP engine failed or produced output that does not check out."""

    exit_code = 5


class OutputError(ExpertmixError):
    """The output folder cannot be written (exists, not writable ...)."""

    exit_code = 6
