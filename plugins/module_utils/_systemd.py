# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What systemd says about the service a process runs in: parsing, and the one runner of systemctl and journalctl.

Private to the collection: the interface may change without notice.
Facts relied on (systemd 239 and later):

* ``/proc/PID/cgroup`` has ``0::PATH`` (cgroup v2, also on hybrid hosts) and/or
  ``N:name=systemd:PATH`` (cgroup v1). A process of a system service lies under
  ``/system.slice/NAME.service`` or a slice below it, possibly in a sub-cgroup of
  the service (``Delegate=``). A component that would clash with a cgroup file
  name is escaped with a leading ``_``;
* processes of a user manager lie under ``user@UID.service``: their units are not
  the system manager's, and ``systemctl`` without ``--user`` does not know them;
* ``systemctl show --property=A,B UNIT`` prints one ``KEY=VALUE`` line per property,
  in systemd's order, not the order asked for.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import subprocess

_SUFFIX = '.service'

# systemctl gives up on a PID 1 that does not answer after 25 s (its D-Bus timeout) and says so itself; a command
# still running after this is hung in a way nothing will end.
COMMAND_TIMEOUT = 30.0
# A killed command whose process does not go away (stuck in the kernel) is left behind after this long.
KILL_WAIT_SECONDS = 1.0


class SystemdError(Exception):
    """systemctl or journalctl could not be run or did not finish in time; the message names the command."""


def run(argv, timeout=None):
    """(rc, stdout, stderr) of a systemctl or journalctl command, which must end within ``timeout`` seconds
    (COMMAND_TIMEOUT by default).

    The collection runs systemctl and journalctl only through this: AnsibleModule.run_command has no timeout
    (ansible-core 2.17 to 2.19). The command runs in a session of its own so that, once overdue, its whole process
    group is killed; SystemdError then names the command and the timeout.
    """
    timeout = COMMAND_TIMEOUT if timeout is None else timeout
    command = ' '.join(argv)
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   close_fds=True, start_new_session=True)
    except (IOError, OSError) as exc:
        raise SystemdError('%s cannot be run: %s' % (command, exc.strerror or exc))
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise SystemdError('%s did not finish within %gs (killed)' % (command, timeout))
    return process.returncode, out.decode('utf-8', 'replace'), err.decode('utf-8', 'replace')


def show(systemctl, unit, properties, timeout=None):
    """{property: value} of ``unit`` from ``systemctl show --property=...``, the one runner of it.

    SystemdError naming the command when systemctl cannot be run, does not end within ``timeout`` seconds
    (COMMAND_TIMEOUT by default) or fails.
    """
    command = [systemctl, 'show', '--property=%s' % ','.join(properties), unit]
    rc, out, err = run(command, timeout)
    if rc != 0:
        raise SystemdError('%s failed (rc=%d): %s' % (' '.join(command), rc, (err or out or '').strip()))
    return parse_show(out)


def _kill_group(process):
    # The leader is not reaped yet, so its process group ID cannot name another group.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        process.wait(timeout=KILL_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    # A process of the group that escaped it (setsid) may still hold the pipes: close them, never read to their end.
    process.stdout.close()
    process.stderr.close()


def _unescape(component):
    return component[1:] if component.startswith('_') else component


def _systemd_paths(text):
    """The cgroup paths systemd manages from /proc/PID/cgroup, the unified (v2) one first."""
    unified, legacy = [], []
    for line in (text or '').splitlines():
        fields = line.strip().split(':', 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == '0' and controllers == '':
            unified.append(path)
        elif controllers == 'name=systemd':
            legacy.append(path)
    return unified + legacy


def unit_from_cgroup(text):
    """The system service (``app.service``) a process runs in, from the text of /proc/PID/cgroup, or None.

    None for a process outside any service (a login session's scope, a container
    without systemd, the root cgroup) and for one of a user manager's services.
    """
    for path in _systemd_paths(text):
        components = [_unescape(component) for component in path.split('/') if component]
        services = [component for component in components
                    if component.endswith(_SUFFIX) and len(component) > len(_SUFFIX)]
        if any(service.startswith('user@') for service in services):
            return None
        if services:
            return services[-1]
    return None


def parse_show(text):
    """{KEY: VALUE} from the output of ``systemctl show --property=...``; lines without ``=`` are skipped."""
    properties = {}
    for line in (text or '').splitlines():
        key, sep, value = line.partition('=')
        if sep and key.strip():
            properties[key.strip()] = value.strip()
    return properties


def int_property(properties, key):
    """An integer property (``MainPID``, ``NRestarts``), or None when absent or not a number."""
    value = properties.get(key, '')
    return int(value) if value.isdigit() else None


def cursor_from(output):
    """The journal cursor ``journalctl --show-cursor`` printed (its ``-- cursor: C`` line), or None."""
    for line in (output or '').splitlines():
        if line.startswith('-- cursor: '):
            return line[len('-- cursor: '):].strip() or None
    return None
