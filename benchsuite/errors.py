"""User-facing errors: one line, no traceback, exit code 2."""


class BenchError(Exception):
    """An error caused by the user's input; the CLI prints `str(err)` and exits 2."""

    exit_code = 2


class SpecError(BenchError):
    """A spec that does not validate: names the file, the field path and what is allowed."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class RunFailed(Exception):
    """A run's failure already described for the runs table (divergence, an error from a worker):
    stored as its message, without the frame it was raised in."""


class DiskFullError(BenchError):
    """No space left while writing a checkpoint or the database. What was there before is intact, so the
    sweep stops (every later write would fail too) with exit code 1, and a rerun with space resumes."""

    exit_code = 1
