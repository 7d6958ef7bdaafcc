# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A gunicorn master and its workers as a fake /proc tree, moved along by the signals it gets.

The tree has what the modules read: stat (with start time), cmdline, environ,
fd/ symlinks (heartbeat files are real files whose mode marks a boot, like
gunicorn 20.1's fchmod), fdinfo/, task/PID/children, cgroup (when a FakeSystemd
runs the fake) and uptime. Each call of ``step()`` moves the simulated gunicorn
one observable state further, the way the real one changes between two polls.
``FakeSystemd`` is the system manager of a unit the fake runs in, asked through
``systemctl show``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import signal

from ansible_collections.graceful.wsgi.plugins.module_utils import _systemd

ARGV = ['/srv/app/venv/bin/python3', '/srv/app/venv/bin/gunicorn', '-c', 'CONFIG', 'app:app']


class FakeGunicorn:

    def __init__(self, root, workers=3, broken=False, never_ready=False, pidfile_arg=None, hup_staggered=False,
                 config='preload_app = False\n', extra_args=()):
        self.root = root
        self.proc = root / 'proc'
        self.tmp = root / 'tmp'
        self.proc.mkdir()
        self.tmp.mkdir()
        (self.proc / 'uptime').write_text('1000.00 900.00\n')
        self.pidfile = root / 'gunicorn.pid'
        self.log = root / 'gunicorn.log'
        self.log.write_text('[2026-11-22 10:00:00 +0000] [100] [INFO] Listening at: http://127.0.0.1:8000 (100)\n')
        self.stderr = str(self.log)  # where fd 2 of every process points; a FakeSystemd journal makes it a socket
        self.count = workers
        self.broken = broken
        self.never_ready = never_ready
        self.hup_staggered = hup_staggered
        # The config file the master names with -c, with the text given (None: no such file).
        (root / 'etc').mkdir()
        self.config = root / 'etc' / 'gunicorn.conf.py'
        if config is not None:
            self.config.write_text(config)
        self.argv = [str(self.config) if arg == 'CONFIG' else arg for arg in ARGV] + list(extra_args) + (
            ['--pid', pidfile_arg] if pidfile_arg else [])
        self.next_pid = 200
        self.processes = {}
        self.kills = []
        self.pidfile_at_kill = []  # (pid, signal, what the pidfile said when the signal arrived)
        self.pending = []  # steps still to happen, each a callable
        self.cgroup = None  # the text of every /proc/PID/cgroup, when set
        self.exit_hooks = []  # called with the PID of a master that exited (not an aborted new master)
        self.master = self.spawn_master(100, ppid=1, environ={})
        for dummy in range(workers):
            self.spawn_worker(self.master, booted=True)
        self.pidfile.write_text('%d\n' % self.master)
        self.write()

    # ------------------------------------------------------------ process table

    def add(self, pid, ppid, argv, environ, start):
        self.processes[pid] = dict(ppid=ppid, argv=argv, environ=environ, start=start, fds={}, children=[])
        if ppid in self.processes:
            self.processes[ppid]['children'].append(pid)
        return pid

    def spawn_master(self, pid, ppid, environ):
        self.add(pid, ppid, self.argv, environ, start=5000 + pid)
        self.processes[pid]['fds'] = {'0': '/dev/null', '2': self.stderr, '5': 'socket:[777]'}
        return pid

    def spawn_worker(self, master, booted):
        pid = self.next_pid
        self.next_pid += 1
        self.add(pid, master, self.argv, dict(self.processes[master]['environ']), start=5000 + pid)
        heartbeat = self.tmp / ('wgunicorn-%d' % pid)
        heartbeat.write_text('')
        os.chmod(str(heartbeat), 0o001 if booted else 0o600)
        fd = str(10 + len(self.processes[master]['fds']))
        self.processes[master]['fds'][fd] = str(heartbeat)
        self.processes[pid]['fds'] = {'2': self.stderr, '6': str(heartbeat), '5': 'socket:[777]'}
        return pid

    def boot(self, pid):
        os.chmod(str(self.tmp / ('wgunicorn-%d' % pid)), 0o001)

    def remove(self, pid):
        info = self.processes.pop(pid)
        parent = self.processes.get(info['ppid'])
        if parent:
            parent['children'].remove(pid)
            parent['fds'] = dict((fd, target) for fd, target in parent['fds'].items()
                                 if target != str(self.tmp / ('wgunicorn-%d' % pid)))
        for child in list(info['children']):
            self.processes[child]['ppid'] = 1

    def workers_of(self, master):
        return [pid for pid in self.processes.get(master, {}).get('children', [])
                if self.processes[pid]['environ'].get('GUNICORN_PID') != str(master)]

    def write(self):
        for entry in self.proc.iterdir():
            if entry.name.isdigit():
                shutil.rmtree(str(entry))
        for pid, info in self.processes.items():
            base = self.proc / str(pid)
            (base / 'fd').mkdir(parents=True)
            (base / 'fdinfo').mkdir()
            (base / 'task' / str(pid)).mkdir(parents=True)
            fields = ['S', str(info['ppid'])] + ['0'] * 17 + [str(info['start'])] + ['0'] * 10
            (base / 'stat').write_text('%d (gunicorn) %s\n' % (pid, ' '.join(fields)))
            (base / 'cmdline').write_bytes(b'\0'.join(a.encode() for a in info['argv']) + b'\0')
            (base / 'environ').write_bytes(b''.join(('%s=%s\0' % kv).encode() for kv in info['environ'].items()))
            (base / 'task' / str(pid) / 'children').write_text(' '.join(str(c) for c in info['children']))
            if self.cgroup is not None:
                (base / 'cgroup').write_text(self.cgroup)
            for fd, target in info['fds'].items():
                os.symlink(target, str(base / 'fd' / fd))
                (base / 'fdinfo' / fd).write_text('pos:\t0\nflags:\t0102001\n')

    # ------------------------------------------------------------ signals and time

    def pidfile_text(self):
        return self.pidfile.read_text().strip() if self.pidfile.exists() else None

    def kill(self, pid, sig):
        self.kills.append((pid, sig))
        self.pidfile_at_kill.append((pid, sig, self.pidfile_text()))
        if pid not in self.processes:
            raise OSError(3, 'No such process')
        if sig == 0:
            return
        handler = {signal.SIGHUP: self.on_hup, signal.SIGUSR2: self.on_usr2,
                   signal.SIGTERM: self.on_term, signal.SIGQUIT: self.on_term}.get(sig)
        if handler:
            handler(pid)

    def step(self):
        if self.pending:
            self.pending.pop(0)()
            self.write()

    def logs(self, *lines):
        with open(str(self.log), 'a') as handle:
            for line in lines:
                handle.write('[2026-11-22 10:00:01 +0000] [%d] [ERROR] %s\n' % (self.master, line))

    def on_hup(self, pid):
        old = self.workers_of(pid)

        def spawn():
            for dummy in range(1 if self.hup_staggered else self.count):
                self.spawn_worker(pid, booted=False)

        # The first new worker booted and the old ones gone before the master's listing shows the others.
        def spawn_the_rest():
            for dummy in range(self.count - 1):
                self.spawn_worker(pid, booted=False)

        def retire():
            for worker in old:
                self.remove(worker)
            if self.broken:
                for worker in self.workers_of(pid):
                    self.remove(worker)
                self.logs('RuntimeError: release 2 is broken', 'Worker (pid:%d) exited with code 3.' % self.next_pid)
                self.processes[pid]['fds'].pop('5')

        def boot():
            if self.broken:
                self.remove(pid)
                return
            for worker in self.workers_of(pid):
                self.boot(worker)

        # Staggered: the module looks several times at the one booted new worker before the others show.
        self.pending += [spawn, retire, boot] + ([lambda: None] * 5 + [spawn_the_rest, boot] if self.hup_staggered else [])

    def on_usr2(self, pid):
        if self.upgrade_child(pid):
            return  # gunicorn: "USR2 signal ignored. Child exists."

        def fork():
            new = self.spawn_master(self.next_pid, ppid=pid, environ={'GUNICORN_PID': str(pid)})
            self.next_pid += 1
            for dummy in range(self.count):
                self.spawn_worker(new, booted=False)
            (self.root / 'gunicorn.pid.2').write_text('%d\n' % new)

        def boot():
            new = self.upgrade_child(pid)
            if self.broken:
                for worker in self.workers_of(new):
                    self.remove(worker)
                self.logs('RuntimeError: release 2 is broken', 'Worker (pid:%d) exited with code 3.' % new)
                self.pending.append(lambda: self.remove(new))  # gunicorn 27 dies and leaves the .2 file
            elif not self.never_ready:
                for worker in self.workers_of(new):
                    self.boot(worker)

        self.pending += [fork, boot]

    def on_term(self, pid):
        def leave():
            for worker in self.workers_of(pid):
                self.remove(worker)
            info = self.processes[pid]
            successor = self.upgrade_child(pid)
            self.remove(pid)
            if info['environ'].get('GUNICORN_PID') == str(info['ppid']):
                return  # an aborted new master
            # gunicorn's Pidfile.unlink: only a pidfile naming the master that exits is removed.
            if self.pidfile_text() == str(pid):
                self.pidfile.unlink()
            for hook in self.exit_hooks:
                hook(pid)
            if successor and successor in self.processes:
                self.pending.append(lambda: self.promote(successor))

        self.pending.append(leave)

    def promote(self, pid):
        # /proc/PID/environ keeps GUNICORN_PID after promotion: gunicorn only deletes it from os.environ.
        # Pidfile.rename: <pidfile>.2 is removed (it names this master), then Pidfile.create keeps a <pidfile>
        # that already names this master and writes one otherwise.
        upgrade = self.root / 'gunicorn.pid.2'
        if upgrade.exists() and upgrade.read_text().strip() == str(pid):
            upgrade.unlink()
        if self.pidfile_text() != str(pid):
            self.pidfile.write_text('%d\n' % pid)
        self.master = pid

    def upgrade_child(self, pid):
        for child in self.processes.get(pid, {}).get('children', []):
            if self.processes[child]['environ'].get('GUNICORN_PID') == str(pid):
                return child
        return None


class FakeSystemd:
    """The system manager of the unit the fake gunicorn runs in, answering ``systemctl show``.

    When the unit's main process exits, systemd re-reads PIDFile= (``pidfile``, a path or
    None) and adopts the live process it names; without one the service is dead, so it
    stops what is left of the unit and starts it again (gunicorn issue 2856). ``lag``
    answers that many more queries with the old state, as a systemd that has not reaped
    the old master yet. ``failing`` makes every query fail, as in a container without
    systemd. ``hangs_after`` answers that many ``systemctl`` queries, then each one hangs
    until _systemd.run kills it; ``journal_hangs`` does the same to every ``journalctl``.
    """

    ORDER = ('MainPID', 'PIDFile', 'ActiveState', 'NRestarts')  # systemd's, not the order asked for

    def __init__(self, gunicorn, unit='app.service', pidfile=None, main_pid=None, lag=0, failing=False,
                 cgroup=None, journal=False, journal_lag=0, hangs_after=None, journal_hangs=False):
        self.gunicorn = gunicorn
        # journal: gunicorn logs to stderr, a journald stream socket; journalctl reads the fake's log file,
        # which shows new lines journal_lag queries late (journald receives a dead master's last lines late).
        self.journal = journal
        self.journal_lag = journal_lag
        if journal:
            gunicorn.stderr = 'socket:[999]'
            for process in gunicorn.processes.values():
                if '2' in process.get('fds', {}):
                    process['fds']['2'] = gunicorn.stderr
        self.unit = unit
        self.pidfile = pidfile
        self.main_pid = gunicorn.master if main_pid is None else main_pid
        self.restarts = 0
        self.state = 'active'
        self.lag = lag
        self.failing = failing
        self.hangs_after = hangs_after
        self.journal_hangs = journal_hangs
        self.later = None  # the state after the main process exited, shown once the lag is over
        self.queries = []  # (signals sent so far, argv)
        gunicorn.cgroup = cgroup if cgroup is not None else '0::/system.slice/%s\n' % unit
        gunicorn.exit_hooks.append(self.exited)
        gunicorn.write()

    def exited(self, pid):
        if pid != self.main_pid:
            return
        named = None
        if self.pidfile and os.path.exists(str(self.pidfile)):
            text = open(str(self.pidfile)).read().strip()
            named = int(text) if text.isdigit() else None
        if named in self.gunicorn.processes:
            self.later = dict(main_pid=named, restarts=self.restarts, state='active')
            return
        for other in list(self.gunicorn.processes):
            if other in self.gunicorn.processes:
                self.gunicorn.remove(other)
        upgrade = self.gunicorn.root / 'gunicorn.pid.2'
        if upgrade.exists():
            upgrade.unlink()
        fresh = self.gunicorn.spawn_master(900, ppid=1, environ={})
        for dummy in range(self.gunicorn.count):
            self.gunicorn.spawn_worker(fresh, booted=True)
        self.gunicorn.pidfile.write_text('%d\n' % fresh)
        self.gunicorn.master = fresh
        self.later = dict(main_pid=fresh, restarts=self.restarts + 1, state='active')

    def run(self, args, timeout=None):
        """_systemd.run's part: the command's (rc, stdout, stderr), or SystemdError for one that hangs."""
        self.queries.append((len(self.gunicorn.kills), list(args)))
        systemctl_queries = [argv for sent, argv in self.queries if argv[0] == '/usr/bin/systemctl']
        if (self.journal_hangs and args[0] == '/usr/bin/journalctl') or (
                self.hangs_after is not None and len(systemctl_queries) > self.hangs_after
                and args[0] == '/usr/bin/systemctl'):
            raise _systemd.SystemdError('%s did not finish within %gs (killed)'
                                        % (' '.join(args), _systemd.COMMAND_TIMEOUT if timeout is None else timeout))
        if args[0] == '/usr/bin/journalctl':
            return self.journalctl(args)
        assert args[:2] == ['/usr/bin/systemctl', 'show'] and args[-1] == self.unit, args
        if self.failing:
            return 1, '', 'System has not been booted with systemd as init system (PID 1). Can\'t operate.\n'
        if self.later is not None:
            if self.lag:
                self.lag -= 1
            else:
                self.main_pid, self.restarts, self.state = (self.later['main_pid'], self.later['restarts'],
                                                            self.later['state'])
                self.later = None
        asked = args[2].split('=', 1)[1].split(',')
        values = dict(MainPID=self.main_pid, PIDFile=self.pidfile or '', ActiveState=self.state,
                      NRestarts=self.restarts)
        return 0, ''.join('%s=%s\n' % (key, values[key]) for key in self.ORDER if key in asked), ''

    def journalctl(self, args):
        assert self.journal and args[1:3] == ['--unit', self.unit], args
        lines = open(str(self.gunicorn.log)).read().splitlines()
        if '--show-cursor' in args:
            return 0, '-- cursor: s=fake;i=%d\n' % len(lines), ''
        after = [arg for arg in args if arg.startswith('s=fake;i=')]
        assert after and '--output=cat' in args, args
        if self.journal_lag:
            self.journal_lag -= 1
            return 0, '', ''
        return 0, ''.join(line + '\n' for line in lines[int(after[0].split('=')[-1]):]), ''
