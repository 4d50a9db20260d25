"""The one error type users see: a single line that names the problem and the fix."""


class PluginError(RuntimeError):
    """A user-facing error. ``str(err)`` is one line: what is wrong, then how to fix it.

    The CLI prints it without a traceback; library callers can catch it like any RuntimeError.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} Fix: {fix}")
