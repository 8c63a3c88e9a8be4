"""Emptying a program's scratch directory, whatever the program left in it.

The worker wipes the scratch tmpfs after every program, under the same RLIMIT_NOFILE as the
programs (the rlimits that suit both are set once in the worker) and with Python's recursion
limit. shutil.rmtree holds one descriptor per directory level and recurses once per level, so
a program that nests a few hundred directories made it fail, which the worker cannot survive
(it must not let one program's files reach the next). This walk holds at most three
descriptors and recurses not at all, whatever the depth, and goes by directory descriptors and
single names, so no path grows past PATH_MAX either: down into each subdirectory, up through
".." once it is empty, removing it from its parent. Each directory is listed once.

The program is gone when this runs (its pid namespace is dead; in the weak mode its processes
were killed), so nothing renames entries under the walk.
"""
import os
import stat

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def wipe(directory: str) -> None:
  """Removes everything in `directory`, which itself stays. Raises OSError if it cannot."""
  fd = os.open(directory, _DIRECTORY)
  pending = [_unlink_all_but_subdirectories(fd)]  # Per level: subdirectories still to remove.
  names: list[str] = []  # The path from `directory` down to fd, one name per level.
  try:
    while True:
      if pending[-1]:
        child = pending[-1].pop()
        try:
          child_fd = os.open(child, _DIRECTORY, dir_fd=fd)
        except PermissionError:  # A program made it unreadable (its own uid may do that).
          os.chmod(child, 0o700, dir_fd=fd, follow_symlinks=False)
          child_fd = os.open(child, _DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child_fd
        names.append(child)
        pending.append(_unlink_all_but_subdirectories(fd))
        continue
      pending.pop()
      if not names:
        return
      parent_fd = os.open("..", _DIRECTORY, dir_fd=fd)
      os.close(fd)
      fd = parent_fd
      os.rmdir(names.pop(), dir_fd=fd)
  finally:
    os.close(fd)


def _unlink_all_but_subdirectories(fd: int) -> list[str]:
  """Unlinks every entry of the directory `fd` but its subdirectories; returns their names."""
  if stat.S_IMODE(os.fstat(fd).st_mode) & 0o700 != 0o700:  # Unlinking needs write and search.
    os.fchmod(fd, 0o700)
  subdirectories = []
  with os.scandir(fd) as entries:
    for entry in entries:
      if entry.is_dir(follow_symlinks=False):
        subdirectories.append(entry.name)
        continue
      try:
        os.unlink(entry.name, dir_fd=fd)
      except FileNotFoundError:
        pass
  return subdirectories
