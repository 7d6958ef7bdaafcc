# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""HAProxy's admin socket as a real unix socket server in a thread, answering like HAProxy 2.6.

The answers have the exact format of HAProxy 2.6.12 (the headers are taken from a captured answer, kept in
haproxy-2.6.12-answer.txt with the answer of a backend whose servers are UP, drained then disabled as
community.general.haproxy does it, draining, at weight 0, DOWN, and disabled in the configuration). In
non-interactive mode HAProxy reads one line, runs its ``;``-separated commands, writes each answer followed by
an empty line, and closes. ``mode`` makes a broken one instead: ``hang`` (accepts, never answers), ``trickle``
(a byte of a valid answer every ``trickle_interval`` seconds, for ever), ``close`` (reads the command and closes
without a word), ``flood`` (answers endlessly) and ``backlog`` (listens and never accepts).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURED_ANSWER = os.path.join(HERE, 'haproxy-2.6.12-answer.txt')
CAPTURED_NO_BACKEND = os.path.join(HERE, 'haproxy-2.6.12-no-backend.txt')


def _captured_headers():
    with open(CAPTURED_ANSWER) as handle:
        lines = handle.read().split('\n')
    state = [line for line in lines if line.startswith('# be_id ')][0]
    stat = [line for line in lines if line.startswith('# pxname,')][0]
    return state, stat


STATE_HEADER, STAT_HEADER = _captured_headers()
STATE_COLUMNS = STATE_HEADER[2:].split(' ')
STAT_COLUMNS = STAT_HEADER[2:].split(',')


def server(name, address='10.0.0.11', port=8000, op_state=2, admin=0, weight=1, status='UP', sessions=0):
    """One server of a backend: what both answers say about it."""
    return dict(name=name, address=address, port=port, op_state=op_state, admin=admin, weight=weight, status=status,
                sessions=sessions)


def state_line(backend_id, backend, server_id, srv):
    values = dict(be_id=backend_id, be_name=backend, srv_id=server_id, srv_name=srv['name'], srv_addr=srv['address'],
                  srv_op_state=srv['op_state'], srv_admin_state=srv['admin'], srv_uweight=srv['weight'],
                  srv_iweight=1, srv_time_since_last_change=3, srv_check_status=15, srv_check_result=3,
                  srv_check_health=1, srv_check_state=6, srv_agent_state=0, bk_f_forced_id=0, srv_f_forced_id=0,
                  srv_fqdn='-', srv_port=srv['port'], srvrecord='-', srv_use_ssl=0, srv_check_port=0,
                  srv_check_addr='-', srv_agent_addr='-', srv_agent_port=0)
    return ' '.join(str(values[column]) for column in STATE_COLUMNS)


def stat_line(backend, svname, status, weight='', sessions=0, address=''):
    values = dict(pxname=backend, svname=svname, scur=sessions, status=status, weight=weight, addr=address,
                  mode='http')
    return ','.join(str(values.get(column, '')) for column in STAT_COLUMNS)


def answer(command, backends):
    """HAProxy 2.6's answer to one command line, for ``backends`` {name: [server(...), ...]}."""
    parts = []
    for one in command.split(';'):
        words = one.split()
        if words[:3] == ['show', 'servers', 'state']:
            names = words[3:] or sorted(backends)
            if any(name not in backends for name in names):
                parts.append("Can't find backend.\n")
                continue
            lines = ['1', STATE_HEADER]
            for backend_id, name in enumerate(sorted(backends), 3):
                if name in names:
                    lines += [state_line(backend_id, name, server_id, srv)
                              for server_id, srv in enumerate(backends[name], 1)]
            parts.append('\n'.join(lines) + '\n')
        elif words == ['show', 'stat']:
            lines = [STAT_HEADER]
            for name in sorted(backends):
                lines.append(stat_line(name, 'FRONTEND', 'OPEN'))
                lines += [stat_line(name, srv['name'], srv['status'], srv['weight'], srv['sessions'],
                                    '%s:%d' % (srv['address'], srv['port'])) for srv in backends[name]]
                lines.append(stat_line(name, 'BACKEND', 'UP', len(backends[name])))
            parts.append('\n'.join(lines) + '\n')
        else:
            parts.append('Unknown command, but maybe one of the following ones is a better match:\n')
    return ''.join(part + '\n' for part in parts)


class FakeHaproxy:
    """A stats socket at ``path`` served by a thread until ``stop()``."""

    def __init__(self, path, backends=None, mode='answer', trickle_interval=0.05, canned=None):
        self.path = str(path)
        self.backends = backends or {}
        self.mode = mode
        self.trickle_interval = trickle_interval
        self.canned = canned
        self.commands = []
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(0 if mode == 'backlog' else 8)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve)
        self._thread.daemon = True

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self):
        while not self._stop.is_set():
            if self.mode == 'backlog':
                time.sleep(0.05)
                continue
            try:
                connection = self._listener.accept()[0]
            except socket.timeout:
                continue
            self.connections += 1
            try:
                self._handle(connection)
            except (IOError, OSError):
                pass
            finally:
                connection.close()

    def _read_line(self, connection):
        connection.settimeout(2)
        data = b''
        while not data.endswith(b'\n'):
            chunk = connection.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode('utf-8').strip()

    def _handle(self, connection):
        command = self._read_line(connection)
        self.commands.append(command)
        if self.mode == 'close':
            return
        if self.mode == 'hang':
            self._stop.wait()
            return
        if self.canned is not None:
            with open(self.canned, 'rb') as handle:
                text = handle.read()
        else:
            text = answer(command, self.backends).encode('utf-8')
        if self.mode == 'trickle':
            for index in range(len(text) * 1000):
                if self._stop.wait(self.trickle_interval):
                    return
                connection.sendall(text[index % len(text):index % len(text) + 1])
        elif self.mode == 'flood':
            while not self._stop.is_set():
                connection.sendall(text)
        else:
            connection.sendall(text)
