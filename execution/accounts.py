"""The sandbox user's account: /etc/passwd and /etc/group as programs see them.

As root, programs run as a per-worker uid no account uses, so `pwd.getpwuid(os.getuid())` and
`getpass.getuser()` would raise KeyError, which ordinary programs do not expect. The worker
bind-mounts generated copies of both files (read-only, in its own mount namespace only): the
host's entries, plus one for the sandbox uid and gid whose home is the scratch directory, so
pwd, getpass, `~` and $HOME all agree. As an ordinary user (a user namespace mapping only the
caller's uid) the caller's own entry is kept, with its home pointed at the scratch directory.
"""
USER_NAME = "sandbox"
SHELL = "/bin/sh"


def _fields(line: str, count: int) -> list[str] | None:
  """The fields of an entry line, or None for comments, blanks and malformed lines."""
  if not line or line.startswith("#"):
    return None
  fields = line.split(":")
  return fields if len(fields) == count else None


def _free_name(wanted: str, taken: set[str], number: int) -> str:
  return wanted if wanted not in taken else f"{wanted}-{number}"


def passwd_with_user(host_text: str, uid: int, gid: int, home: str) -> tuple[str, str]:
  """(passwd text with an entry for `uid` whose home is `home`, that entry's user name).

  Host entries stay as they are, except an existing entry of `uid`, which keeps its name,
  comment and shell but gets `home` and `gid` (the ones programs actually run with)."""
  lines = host_text.splitlines()
  entries = [_fields(line, 7) for line in lines]
  mine = next((i for i, e in enumerate(entries) if e and e[2] == str(uid)), None)
  if mine is not None:
    name, _, _, _, comment, _, shell = entries[mine]
    lines[mine] = ":".join((name, "x", str(uid), str(gid), comment, home, shell))
  else:
    name = _free_name(USER_NAME, {e[0] for e in entries if e}, uid)
    lines.append(":".join((name, "x", str(uid), str(gid), "sandboxed program", home, SHELL)))
  return "\n".join(lines) + "\n", name


def group_with_group(host_text: str, gid: int, name: str) -> str:
  """group text with an entry for `gid` (named `name` unless taken); host entries unchanged."""
  lines = host_text.splitlines()
  entries = [_fields(line, 4) for line in lines]
  if not any(e and e[2] == str(gid) for e in entries):
    lines.append(f"{_free_name(name, {e[0] for e in entries if e}, gid)}:x:{gid}:")
  return "\n".join(lines) + "\n"
