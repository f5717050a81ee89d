"""In-container runner of one train or evaluate step (the image's entrypoint).

    runner.py --stdout FILE --stderr FILE -- COMMAND [ARG...]

Sends the step's output to FILE (bind-mounted from the host, so the orchestrator can
follow a long step while it runs), disables core dumps, closes standard input and
replaces itself with COMMAND. A command that cannot start exits 127 with the reason in
the stderr file. The sandbox has already set everything else: user, limits, mounts,
environment, no network. Standard library only: it runs on any base image.
"""

import os
import resource
import sys


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: runner.py --stdout FILE --stderr FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    files = dict(zip(opts[0::2], opts[1::2]))
    if not command or set(files) - {"--stdout", "--stderr"}:
        print(f"runner.py: bad arguments {argv!r}", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, key in ((1, "--stdout"), (2, "--stderr")):
        if key in files:
            out = os.open(files[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"could not start {command[0]!r}: {e}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
