# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Root without CAP_SYS_PTRACE over a fake /proc tree, for unit tests.

The entries the kernel guards with its ptrace access check (cwd, exe, maps, environ, fd/N, fdinfo/N)
raise EACCES, as for root in a container with Docker's default capabilities; listing fd/ and reading
stat, cmdline and children still work. A read made as the process's owner goes through ``run_as``,
which this stands in for without forking: it records the owner, lets the reader see the entries and
hands back what the pipe would carry (the value through JSON).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import re

from ansible_collections.graceful.wsgi.plugins.module_utils import _gunicorn, _proc

GUARDED = re.compile(r'/\d+/(cwd|exe|maps|environ|fd/\d+|fdinfo/\d+)$')


class NoPtrace:

    def __init__(self, monkeypatch, proc, owner=(1000, 1000, True), euid=0):
        self.proc = str(proc)
        self.owner = owner
        self.as_owner = False
        self.owner_reads = []   # (uid, gid, timeout) of every read as the owner
        self.failure = None     # a reason the stand-in fails with (OwnerReadError), as a real child may
        real_readlink, real_stat = os.readlink, os.stat

        def readlink(path, *args, **kwargs):
            self.guard(path)
            return real_readlink(path, *args, **kwargs)

        def stat(path, *args, **kwargs):
            self.guard(path)
            return real_stat(path, *args, **kwargs)

        def guarded_open(path, *args, **kwargs):
            self.guard(path)
            return open(path, *args, **kwargs)

        monkeypatch.setattr(os, 'readlink', readlink)
        monkeypatch.setattr(os, 'stat', stat)
        for module in (_proc, _gunicorn):
            monkeypatch.setattr(module, 'open', guarded_open, raising=False)
        monkeypatch.setattr(os, 'geteuid', lambda: euid)
        monkeypatch.setattr(_proc, 'process_owner', lambda pid, proc_root='/proc': self.owner)
        monkeypatch.setattr(_proc, 'run_as', self.run_as)

    def guard(self, path):
        if isinstance(path, str) and not self.as_owner and path.startswith(self.proc + '/') and GUARDED.search(path):
            raise OSError(errno.EACCES, 'Permission denied', path)

    def run_as(self, uid, gid, function, timeout):
        self.owner_reads.append((uid, gid, timeout))
        if self.failure:
            raise _proc.OwnerReadError(self.failure)
        self.as_owner = True
        try:
            value = function()
        finally:
            self.as_owner = False
        return json.loads(json.dumps(value))
