"""User-facing errors: one line naming the problem and the fix, no traceback."""
import sys


class UserError(Exception):
    """A problem with the user's input; the message names it and says how to fix it."""


def lookup(registry, name, kind):
    """Return ``registry[name]`` or raise a UserError that lists the valid names.

    kind: what the name is, in words ("architecture", "loss", ...), for the message.
    """
    try:
        return registry[name]
    except KeyError:
        raise UserError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(registry))}") from None


def run_cli(main, args=None):
    """Run ``main(args)`` and turn a UserError into one line on stderr and exit status 2."""
    prog = sys.argv[0].rsplit('/', 1)[-1] if sys.argv and sys.argv[0] else 'salt'
    try:
        return main(args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; outputs written so far are intact", file=sys.stderr)
        raise SystemExit(130) from None
