# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The mules and spoolers of a uWSGI instance: which processes they are, and the proof that they were replaced.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/mule.c, core/spooler.c, core/master.c, core/master_utils.c):

* a chain reload (FIFO ``c``, ``touch-chain-reload``), a workers reload (``w``) and SIGHUP to each worker replace
  the workers only: the mules and spoolers go on running the code they loaded (uWSGI issue 915);
* a mule ends at SIGHUP, which is what uWSGI's own ``touch-mules-reload`` sends it, and the master forks a new one;
* a spooler ignores SIGHUP (``touch-spoolers-reload`` kills it only once ``spooler-reload-mercy`` has passed) and
  ends at SIGTERM; the master then forks a new one. A task it was running stays in the spool directory, which the
  new spooler runs again;
* the stats list the spoolers (``pid``, ``dir``, ``running``) and the daemons (``pid``), not the mules; a mule's
  process title is ``uWSGI mule N`` only with ``auto-procname``. Otherwise a mule is a child of the master that is
  none of these, which only the configuration tells apart from a gateway (``http``, ``fastrouter`` ...).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.graceful.wsgi.plugins.module_utils import _proc

MULE_TITLE = 'uWSGI mule'
# Gateways run as children of the master too, and look like mules unless titled.
GATEWAY_OPTIONS = ('http', 'https', 'fastrouter', 'rawrouter', 'sslrouter', 'forkpty-router', 'tuntap-router')
# A replacement counts once it has stayed up this long: a mule whose script fails exits at once, and respawns.
SETTLE_SECONDS = 1.0


class HelperError(Exception):
    """The mules cannot be told apart; the message names the processes and what would tell them apart."""


def declared_mules(options):
    """How many mules a configuration declares: one per ``mule`` option, plus the number of each ``mules``."""
    count = 0
    for name, value in options:
        if name == 'mule':
            count += 1
        elif name == 'mules' and value and value.strip().isdigit():
            count += int(value.strip())
    return count


def spoolers(document):
    """{dir: pid} of the spoolers the stats list (pid 0 while one is being respawned)."""
    return dict((str(spooler.get('dir')), int(spooler.get('pid') or 0)) for spooler in document.get('spoolers') or []
                if isinstance(spooler, dict))


def busy_spoolers(document):
    """The directories of the spoolers running a task now."""
    return set(str(spooler.get('dir')) for spooler in document.get('spoolers') or []
               if isinstance(spooler, dict) and spooler.get('running'))


def find_mules(master_pid, document, options, unknown, proc_root=None):
    """The PIDs of the master's mules, sorted; HelperError when they cannot be told apart from its gateways.

    ``document`` is a stats document of that master; ``options`` and ``unknown`` what _uwsgi_config's
    declared_options read of its configuration.
    """
    known = set(int(worker.get('pid') or 0) for worker in document.get('workers') or [])
    known.update(spoolers(document).values())
    known.update(int(daemon.get('pid') or 0) for daemon in document.get('daemons') or [] if isinstance(daemon, dict))
    others = []
    titled = []
    for pid in _proc.child_pids(master_pid, proc_root):
        if pid in known:
            continue
        info = _proc.read_process(pid, proc_root)
        if info is None:
            continue
        others.append(pid)
        if info.cmdline and info.cmdline[0].startswith(MULE_TITLE):
            titled.append(pid)
    if titled or not others:
        return sorted(titled)
    declared = declared_mules(options)
    gateways = sorted(set(name for name, _value in options if name in GATEWAY_OPTIONS))
    if declared and not gateways and not unknown:
        return sorted(others)
    if not declared and not unknown:
        return []
    why = ('its configuration declares gateways too (%s)' % ', '.join(gateways) if declared and gateways
           else 'its configuration cannot be read in full, so whether it declares mules is unknown')
    listed = ', '.join(str(pid) for pid in sorted(others))
    raise HelperError('cannot tell which of the children %s of the uWSGI master %d are mules: %s; set auto-procname, '
                      'which titles each mule "uWSGI mule N"' % (listed, master_pid, why))


class Replacement:
    """Follows one kind of helper (mules, or the spoolers of each directory) until each old PID is gone and a new
    one has stayed up for SETTLE_SECONDS."""

    def __init__(self, old, clock):
        self.old = set(old)
        self.clock = clock
        self.first_seen = {}

    def settled(self, current):
        """Whether ``current`` (the PIDs now) holds as many new PIDs as there were old ones, each up long enough."""
        now = self.clock()
        fresh = [pid for pid in current if pid and pid not in self.old]
        for pid in list(self.first_seen):
            if pid not in fresh:
                del self.first_seen[pid]  # it ended: a new one must settle again
        for pid in fresh:
            self.first_seen.setdefault(pid, now)
        stable = [pid for pid in fresh if now - self.first_seen[pid] >= SETTLE_SECONDS]
        return len(stable) >= len(self.old) and not (self.old & set(current))
