"""The ``files`` target: secrets as files in a directory (sidecar mode, Compose, CI).

The whole set is swapped atomically the way Kubernetes projected volumes do it::

    out/
      ..2026_11_29_13_45_00.123456/    one generation: every secret, plus ..syncd.json (labels)
      ..data -> ..2026_11_29_13_45_00.123456
      openai_api_key -> ..data/openai_api_key
      ..syncd-key                      the fingerprint HMAC key (0400)
      ..syncd.lock                     held by the one process writing this directory

A new generation is written in a temporary folder, fsynced and renamed into place; then a
new ``..data`` symlink is renamed over the old one. ``out/<name>`` never changes, so a reader
sees either the old set or the new one, never a missing or half-written file.

The package is split by concern: ``settings`` (the config block and the naming rules),
``fsdir`` (directory-descriptor operations no name can escape), ``state`` (the labels),
``lock`` (one writer per directory), ``generation`` (building and switching a generation),
``tidy`` (links, old generations, crash leftovers) and ``target`` (the interface).
"""

from syncd.targets.files.settings import FilesTargetConfig
from syncd.targets.files.target import FilesTarget

__all__ = ["FilesTarget", "FilesTargetConfig"]
