# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""uWSGI FastRouter subscriptions: the nodes its stats list, and the packet its subscription server reads.

Private to the collection: the interface may change without notice.
Facts relied on (uWSGI 2.0, core/subscription.c, plugins/corerouter), checked against 2.0.21 and 2.0.31:

* the FastRouter's stats list ``subscriptions[].nodes[]`` with ``name`` (the address the vassal
  subscribed with), ``death_mark`` (1 once unsubscribed), ``ref`` (its sessions) and ``last_check``;
  an unsubscribed node is dropped once its last session ends;
* a subscription is one datagram to the subscription server: a uwsgi packet with modifier1 224 and
  modifier2 the command (0 subscribe, 1 unsubscribe), whose vars carry ``key`` and ``address``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

from ansible_collections.graceful.wsgi.plugins.module_utils import _uwsgi


# ---------------------------------------------------------------- stats

def fastrouter_nodes(document):
    """Every subscribed node by the address it subscribed with (a live one wins over a dead one)."""
    nodes = {}
    for subscription in document.get('subscriptions') or []:
        for node in (subscription or {}).get('nodes') or []:
            if not isinstance(node, dict) or 'name' not in node:
                continue
            node = dict(node, key=subscription.get('key'))
            name = str(node['name'])
            if name not in nodes or not node_live(nodes[name]):
                nodes[name] = node
    return nodes


def node_live(node):
    return node is not None and not node.get('death_mark')


# ---------------------------------------------------------------- the subscription server

SUBSCRIPTION_MODIFIER1 = 224
SUBSCRIBE = 0
UNSUBSCRIBE = 1


def _uwsgi_var(name, value):
    name, value = name.encode('utf-8'), str(value).encode('utf-8')
    return struct.pack('<H', len(name)) + name + struct.pack('<H', len(value)) + value


def subscription_packet(key, address, command):
    """A subscription packet as a vassal sends it (uwsgi packet, modifier1 224, modifier2 the command)."""
    body = _uwsgi_var('key', key) + _uwsgi_var('address', address) + _uwsgi_var('modifier1', 0) + \
        _uwsgi_var('modifier2', 0)
    return struct.pack('<BHB', SUBSCRIPTION_MODIFIER1, len(body), command) + body


def send_packet(packet, servers, timeout):
    """Send ``packet`` to each subscription server (a unix socket path or ``host:port``), each send bounded by
    ``timeout`` seconds; returns the errors, one per server it could not be sent to."""
    errors = []
    for server in servers:
        family, target = _uwsgi.socket_target(_uwsgi.parse_stats_address(server))
        sock = socket.socket(family, socket.SOCK_DGRAM)
        # A unix datagram blocks its sender while the receiver's queue is full (a router that reads nothing).
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, target)
        except socket.timeout:
            errors.append('%s: no room to send within %.1fs (the subscription server reads nothing)'
                          % (server, timeout))
        except (IOError, OSError) as exc:
            errors.append('%s: %s' % (server, exc.strerror or exc))
        finally:
            sock.close()
    return errors
