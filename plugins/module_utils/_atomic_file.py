# -*- coding: utf-8 -*-
# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to replace a file: write a temporary file beside it, then rename(2) it over the old one.

Private to this collection; used by vllm_launch (unit and secret environment files) and the model store
(manifest, journal, progress). Readers see the old file or the new one, never a part of either.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import os


def write_atomically(path, text, mode=None, prepare=None, durable=True):
    """Replace path with text.

    The temporary file sits in path's folder (the same filesystem, so the rename is atomic) under a name no other
    writer uses, created exclusively. With mode, it is created 0600 and chmod-ed to mode before the rename, so the
    file is never briefly wider than asked; without, it gets the process umask's default, like open(). prepare
    (a function of the temporary path) runs before the rename too, for ownership. durable: fsync the data before
    the rename, so a crash leaves the old file or the whole new one. On failure the temporary file is removed and
    the error raised.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, ".%s.%s.tmp" % (name, binascii.hexlify(os.urandom(4)).decode("ascii")))
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        if prepare is not None:
            prepare(temporary)
        os.rename(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
