"""One exception per API status code, raised deep and turned into a reply in one place.

InterWorx documents 0, 11 and 401; the other codes are ours and listed in the README.
"""

from __future__ import annotations

from collections.abc import Mapping

VALIDATION_HEADER = "There was a problem validating the form. Please see details below."


class ApiError(Exception):
    status = 1
    reply_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def payload(self) -> object:
        return self.message


class ValidationFailed(ApiError):
    """Status 11: the payload is the header line and one `<field>: <message>` line per field."""

    status = 11
    reply_code = 400

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        lines = [VALIDATION_HEADER, *(f"{field}: {text}" for field, text in self.problems.items())]
        super().__init__("\n".join(lines))

    @classmethod
    def from_payload(cls, payload: str) -> ValidationFailed:
        """The problems back from the payload's lines (how clients read a status 11 reply)."""
        lines = [line for line in payload.split("\n")[1:] if line]
        return cls(dict(line.partition(": ")[::2] for line in lines))


class AuthenticationFailed(ApiError):
    status = 401
    reply_code = 401


class PermissionDenied(ApiError):
    status = 403
    reply_code = 403


class UnknownAction(ApiError):
    """Status 404: no such controller, or no such action on it."""

    status = 404
    reply_code = 404


class ActionFailed(ApiError):
    """Status 1: the request was valid but the action did not succeed (service would not start)."""

    status = 1
    reply_code = 500


class PartialFailure(ApiError):
    """Status 207 (ours): a cascaded action ran here but failed on some nodes. The payload is
    the per-node result struct, the same shape as a fully successful cascade's."""

    status = 207
    reply_code = 207

    def __init__(self, results: Mapping[str, object]) -> None:
        failed = sorted(node for node, result in results.items() if _failed(result))
        super().__init__(f"failed on {', '.join(failed)}")
        self.results = dict(results)

    def payload(self) -> object:
        return self.results


def _failed(result: object) -> bool:
    return not isinstance(result, Mapping) or result.get("status") != 0


_BY_STATUS: dict[int, type[ApiError]] = {
    error.status: error for error in (AuthenticationFailed, PermissionDenied, UnknownAction)
}


def error_for_reply(status: int, payload: object, reply_code: int) -> ApiError:
    """The exception a client raises for a reply with status != 0."""
    if status == ValidationFailed.status and isinstance(payload, str):
        return ValidationFailed.from_payload(payload)
    error_type = _BY_STATUS.get(status, ActionFailed)
    error = error_type(payload if isinstance(payload, str) else repr(payload))
    error.status, error.reply_code = status, reply_code  # keep codes we do not know as they came
    return error
