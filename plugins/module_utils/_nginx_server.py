# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The driver of nginx_server: one server file of the role lb_nginx written (or every server's, with those no longer
listed removed), nginx tested and reloaded, and, for a drain, the wait until the workers from before the reload have
finished what they proxied.

Private to the collection: the interface may change without notice.
Facts relied on (besides those of _nginx):

* ``nginx -t`` reads the whole configuration, the new server file included, and fails on an error in it;
* ``systemctl reload nginx`` returns once the master has the signal. The master then starts workers on the new
  configuration and tells the old ones to finish their requests and exit. Once no worker from before the reload
  is left, nothing is on its way to a server the new configuration marks down;
* the file is written beside its final name under a name starting with a dot, which nginx's include glob does
  not match, then renamed over it: nginx never reads half a file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import tempfile
import time

from ansible_collections.graceful.wsgi.plugins.module_utils import _nginx, _proc, _systemd, _wait

WORKER_TITLE = 'nginx: worker process'
NAME = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z')
UNIT = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9:_.@-]{0,250}\.service\Z')
# Often enough that a drain ends within a tenth of a second of its last request.
POLL_INTERVAL = 0.1


def _bad_name(option, value):
    if not NAME.match(value) or '..' in value:
        return ('%s=%r: use letters, digits, ".", "_" and "-", starting with a letter or a digit (at most 64, '
                'no "..")' % (option, value))
    return None


def wanted(params):
    """[(server, content)]: the server and content options, or every item of servers."""
    if params.get('servers') is None:
        return [(params['server'], params['content'])]
    return [(item['name'], item['content']) for item in params['servers']]


def check_params(params):
    """Why the parameters cannot be used, or None: the names that become the server files' paths."""
    names = [name for name, dummy in wanted(params)]
    options = ['server'] if params.get('servers') is None else ['servers[%d].name' % index for index in range(len(names))]
    for option, value in [('app', params['app'])] + list(zip(options, names)):
        problem = _bad_name(option, value)
        if problem:
            return problem
    if len(set(names)) != len(names):
        return 'servers: names %s more than once' % ', '.join(sorted(set(n for n in names if names.count(n) > 1)))
    if not UNIT.match(params['service']):
        return 'service=%r: name a systemd service unit, such as nginx.service' % params['service']
    for option in ('timeout', 'command_timeout'):
        if not params[option] > 0:
            return '%s=%s: must be more than 0 seconds' % (option, params[option])
    return None


def write_file(path, content):
    """Replace ``path`` with ``content`` (root's, 0644) through a dot-named file in the same directory."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix='.%s.' % name, dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(content.encode('utf-8'))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.rename(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise _nginx.NginxError('%s: cannot write: %s' % (path, exc.strerror or exc))


def restore(path, old):
    """Put back what ``path`` held before (None: it did not exist)."""
    if old is None:
        try:
            os.unlink(path)
        except OSError:
            pass
    else:
        write_file(path, old)


def _output(out, err):
    return ' '.join((err or out or '').split())[:600] or 'no output'


def run(params, check_mode, runner=None, clock=time.monotonic, sleep=time.sleep, proc_root=None):
    """The module's result for ``params``; NginxError (the message names the path or the command) on failure.

    ``runner`` runs a bounded command (_systemd.run by default).
    """
    runner = runner or _systemd.run
    started = clock()
    config_dir = params['config_dir'] or '/etc/nginx/graceful-wsgi/%s' % params['app']
    _nginx.check_config_dir(config_dir)
    servers = wanted(params)
    listed = set(name for name, dummy in servers)
    # (path, what it holds now or None, what it must hold or None to remove it), for each file that changes
    changes = []
    for name, content in servers:
        path = _nginx.server_path(config_dir, name)
        old = _nginx.read_server_file(path)
        if old != content:
            changes.append((path, old, content))
    if params.get('prune'):
        for name in _nginx.list_servers(config_dir):
            if name not in listed:
                path = _nginx.server_path(config_dir, name)
                changes.append((path, _nginx.read_server_file(path), None))
    written = [path for path, dummy, content in changes if content is not None]
    removed = [path for path, dummy, content in changes if content is None]
    first = _nginx.server_path(config_dir, servers[0][0]) if servers else ''
    if params.get('servers') is None:
        shown, unchanged = first, '%s already holds this state' % first
    else:
        directory = _nginx.servers_dir(config_dir)
        removed_words = ' (and %d removed)' % len(removed) if removed else ''
        shown = '%d of the %d server files in %s%s' % (len(written), len(servers), directory, removed_words)
        unchanged = 'the server files in %s already hold this state' % directory
    result = dict(changed=bool(changes), path=first, written=written, removed=removed, reloaded=False,
                  old_workers=[], waited=0.0)
    if not changes:
        result['msg'] = '%s: nginx left as it was' % unchanged
        result['elapsed'] = round(clock() - started, 3)
        return result
    if check_mode:
        result['msg'] = '%s would be written%s' % (shown, ' and nginx reloaded' if params['reload'] else '')
        result['elapsed'] = round(clock() - started, 3)
        return result

    def put_back():
        for path, old, dummy in reversed(done):
            restore(path, old)

    done = []
    try:
        for change in changes:
            path, dummy, content = change
            done.append(change)
            if content is None:
                os.unlink(path)
            else:
                write_file(path, content)
    except (OSError, _nginx.NginxError) as exc:
        put_back()
        raise _nginx.NginxError('%s (every server file put back as it was)' % (
            exc if isinstance(exc, _nginx.NginxError) else '%s: cannot remove: %s' % (done[-1][0], exc.strerror)))
    if not params['reload']:
        result['msg'] = '%s written; nginx not reloaded (reload=false)' % shown
        result['elapsed'] = round(clock() - started, 3)
        return result
    rc, out, err = runner([params['nginx'], '-t', '-q'], params['command_timeout'])
    if rc != 0:
        put_back()
        raise _nginx.NginxError('%s -t rejects the configuration with the new %s (put back as it was): %s'
                                % (params['nginx'], shown, _output(out, err)))
    workers = _proc.titled_processes(WORKER_TITLE, proc_root)
    rc, out, err = runner(['systemctl', 'reload', params['service']], params['command_timeout'])
    if rc != 0:
        put_back()
        raise _nginx.NginxError('systemctl reload %s failed (rc=%d; %s put back as it was): %s'
                                % (params['service'], rc, shown, _output(out, err)))
    result['reloaded'] = True
    result['old_workers'] = sorted(workers)

    if params['wait_for_requests'] and workers:
        waited_from = clock()
        deadline = _wait.Deadline(params['timeout'], clock)
        try:
            _wait.poll(lambda: True if not _proc.still_running(workers, proc_root) else None, deadline,
                       POLL_INTERVAL, sleep,
                       describe=lambda: 'nginx workers from before the reload (pid %s) still run after %gs: '
                                        'requests they proxy, to %s too, may still be in flight'
                                        % (', '.join(str(pid) for pid in _proc.still_running(workers, proc_root)),
                                           params['timeout'], ', '.join(sorted(listed))))
        except _wait.WaitTimeout as exc:
            raise _nginx.NginxError(str(exc))
        result['waited'] = round(clock() - waited_from, 3)
    result['msg'] = '%s written, nginx reloaded%s' % (
        shown, ' and its %d old workers done after %.2f s' % (len(workers), result['waited'])
        if params['wait_for_requests'] and workers else '')
    result['elapsed'] = round(clock() - started, 3)
    return result
