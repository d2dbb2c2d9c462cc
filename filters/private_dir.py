"""Whether a directory porter reads files back from is porter's alone."""

from __future__ import annotations

import os
import stat


def private_directory(path: str) -> str | None:
    """Why `path`, a directory porter reads files back from (the cache's disk tier, the mail
    spool), is not porter's alone; None when it is (or does not exist yet: porter makes it
    0700). A directory another local user may write lets them plant what porter then serves
    or mails to the admins."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None  # porter makes it, or says why it cannot
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISDIR(found.st_mode):
        return None  # said when it is opened, with the error itself
    if found.st_uid != os.geteuid():
        return (
            f"is owned by uid {found.st_uid}, not by porter's user (uid {os.geteuid()}): "
            "another user could plant files in it; give it to porter's user, mode 0700"
        )
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"is writable by its group or by others (mode {stat.S_IMODE(found.st_mode):o}): "
            "another user could plant files in it; chmod 700 it"
        )
    return None
