"""One error hierarchy for llmos, with stable exit codes.

Core code raises these; only the CLI edge (``llmos_cli.cli._common``) turns them
into a message on stderr (or a JSON error envelope) and an exit code.
Each error has a stable ``slug`` for machines, a one-line message and an
optional hint for people.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Named exit codes.  Documented in README.md and man/llmos.1; never renumber."""

    OK = 0
    FAILURE = 1  # unexpected internal error
    USAGE = 2  # bad command-line usage
    NOT_FOUND = 3  # unknown package, model, library, source, tool or file
    UNSATISFIABLE = 4  # the resolver found no installable set (missing dep, conflict, hold)
    INVALID_PACKAGE = 5  # malformed manifest or archive, unsafe paths, bad GGUF
    INTEGRITY = 6  # hash or size mismatch, tampered or missing installed file
    LOCKED = 7  # another llmos process holds the state lock
    STATE = 8  # state database missing, corrupt or from a newer llmos
    IO = 9  # no space, no permission, other OS errors
    CHECK_FAILED = 10  # `llmos check` found errors
    ABI = 11  # adapter does not fit its base model
    RUNTIME = 12  # llama.cpp failed: model load, device, generation
    CONTEXT = 13  # prompt does not fit the context window
    TOOL = 14  # a tool is not allowed, unknown or failed
    TRUST = 15  # signature, key, rollback or expiry problem
    NETWORK = 16  # download failed, timed out or sent the wrong bytes
    DEPENDENTS = 17  # removal refused because installed packages need it
    ABORTED = 18  # the user declined, or confirmation needed and stdin is no terminal
    NOT_GROUNDED = 19  # `llmos run --grounded`: no answer supported by the attached libraries (abstained)
    INTERRUPTED = 130  # Ctrl-C


class LlmosError(Exception):
    """Base of every error llmos reports to the user."""

    exit_code: ExitCode = ExitCode.FAILURE
    slug: str = "error"

    def __init__(self, message: str, hint: str | None = None, *, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def to_json(self) -> dict:
        out = {
            "code": self.slug,
            "exit_code": int(self.exit_code),
            "message": self.message,
            "hint": self.hint,
        }
        if self.details:
            out["details"] = self.details
        return out


class UsageError(LlmosError):
    exit_code = ExitCode.USAGE
    slug = "usage"


class NotFoundError(LlmosError):
    exit_code = ExitCode.NOT_FOUND
    slug = "not_found"


class UnsatisfiableError(LlmosError):
    exit_code = ExitCode.UNSATISFIABLE
    slug = "unsatisfiable"


class InvalidPackageError(LlmosError):
    exit_code = ExitCode.INVALID_PACKAGE
    slug = "invalid_package"


class IntegrityError(LlmosError):
    exit_code = ExitCode.INTEGRITY
    slug = "integrity"


class LockedError(LlmosError):
    exit_code = ExitCode.LOCKED
    slug = "locked"


class StateError(LlmosError):
    exit_code = ExitCode.STATE
    slug = "state"


class IOFailure(LlmosError):
    exit_code = ExitCode.IO
    slug = "io"


class CheckFailed(LlmosError):
    exit_code = ExitCode.CHECK_FAILED
    slug = "check_failed"


class AbiError(LlmosError):
    exit_code = ExitCode.ABI
    slug = "abi_mismatch"


class RuntimeFailure(LlmosError):
    exit_code = ExitCode.RUNTIME
    slug = "runtime"


class ContextOverflow(LlmosError):
    exit_code = ExitCode.CONTEXT
    slug = "context_overflow"


class ToolError(LlmosError):
    exit_code = ExitCode.TOOL
    slug = "tool"


class TrustError(LlmosError):
    exit_code = ExitCode.TRUST
    slug = "trust"


class NetworkError(LlmosError):
    exit_code = ExitCode.NETWORK
    slug = "network"


class PayloadUnavailable(NetworkError):
    """No origin of a payload declared by hash delivered its bytes (exit NETWORK)."""

    slug = "payload_unavailable"


class DependentsError(LlmosError):
    exit_code = ExitCode.DEPENDENTS
    slug = "has_dependents"


class Aborted(LlmosError):
    exit_code = ExitCode.ABORTED
    slug = "aborted"


def from_os_error(exc: OSError, action: str) -> LlmosError:
    """Turn an OSError into a clear llmos error (no space, no permission, ...)."""
    import errno

    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return IOFailure(f"no space left on device while {action}{where}", "free some disk space and try again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return IOFailure(
            f"{'read-only file system' if exc.errno == errno.EROFS else 'permission denied'} while {action}{where}",
            "check the permissions of LLMOS_HOME, or point LLMOS_HOME somewhere writable",
        )
    return IOFailure(f"{exc.strerror or exc} while {action}{where}")
