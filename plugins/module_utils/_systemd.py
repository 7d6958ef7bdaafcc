# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What systemd says about the service a process runs in: pure parsing, the modules read and run.

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

_SUFFIX = '.service'


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
