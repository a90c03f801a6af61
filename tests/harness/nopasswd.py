"""Run a command as a uid with no passwd entry and no HOME, as the image runs in a pod.

The image runs as uid/gid 65532 and has no /etc/passwd line for it, so `getpass.getuser()`,
`Path.home()` and `~` expansion have nothing to fall back on. Anything in the components that
needs them crashes in a real pod and nowhere else.

    argv = without_passwd([sys.executable, "-m", "modeltrust.operator", ...])
    subprocess.Popen(argv, env=env_without_home(os.environ))

The command runs in a new user namespace that maps the caller to uid/gid 65532
(`unshare --user --map-user=65532 --map-group=65532`): inside it the process's uid really is
65532, with no passwd entry, while the kernel still checks file access as the caller. That
matters because this environment's interpreter may live where another uid cannot read it
(here: under /root, mode 0700); `setpriv --reuid=65532` would fail on that before the code
under test ran. The image tests (tests/image/) run the same commands as a real uid 65532.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

UID = 65532
# Where getpass.getuser() looks before the passwd database; none of them is set in a pod.
IDENTITY_VARIABLES = ("HOME", "USER", "LOGNAME", "LNAME", "USERNAME")


def check_uid_has_no_passwd_entry() -> None:
    try:
        entry = pwd.getpwuid(UID)
    except KeyError:
        return
    raise AssertionError(
        f"uid {UID} has a passwd entry here ({entry.pw_name}); the test needs none"
    )


def without_passwd(argv: Sequence[str]) -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare, (
        "unshare (util-linux) is missing: it runs commands as a uid with no passwd entry"
    )
    check_uid_has_no_passwd_entry()
    return [unshare, "--user", f"--map-user={UID}", f"--map-group={UID}", "--", *argv]


def env_without_home(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in IDENTITY_VARIABLES}


def environment_is_passwdless() -> None:
    """Fail unless a command under without_passwd() sees uid 65532 and no passwd entry."""
    probe = (
        "import getpass, os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n    getpass.getuser()\nexcept (KeyError, OSError):\n    print('no passwd entry')\n"
        "try:\n    pathlib.Path.home()\nexcept RuntimeError:\n    print('no home')\n"
    )
    result = subprocess.run(
        without_passwd([sys.executable, "-c", probe]),
        env=env_without_home(os.environ), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"unshare could not run a command as uid {UID}: {result.stderr}"
    assert result.stdout.split("\n")[:3] == [f"{UID} {UID}", "no passwd entry", "no home"], (
        result.stdout
    )
