"""The one exception type the user sees.

Anything raised as a StudioError is bad input or a bad state the user can fix: the CLI prints its
message on one line and exits non-zero, with no traceback. Messages name the problem and the fix.
"""


class StudioError(Exception):
    """A problem the user can fix; str(error) is the one line shown to them."""
