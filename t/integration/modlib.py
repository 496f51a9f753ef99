"""Helpers for module tests: a module directory with the test modules in it."""
import os
import shutil
import tempfile

from harness import TOP_BUILDDIR, CLEANUP_DIRS


def module_dir(*names, mode=0o644):
    """A fresh directory (0755) holding copies of the named test modules (NAME.so)."""
    d = tempfile.mkdtemp(prefix="petrel-modules-")
    os.chmod(d, 0o755)
    CLEANUP_DIRS.append(d)
    for name in names:
        src = os.path.join(TOP_BUILDDIR, "t", "modules", ".libs", name + ".so")
        dst = os.path.join(d, name + ".so")
        shutil.copyfile(src, dst)
        os.chmod(dst, mode)
    return d
