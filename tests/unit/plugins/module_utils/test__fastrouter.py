# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ansible_collections.graceful.wsgi.plugins.module_utils import _fastrouter


def test_subscription_packet_is_what_a_vassal_sends():
    packet = _fastrouter.subscription_packet('shop', '127.0.0.1:3031', _fastrouter.UNSUBSCRIBE)
    body = (b'\x03\x00key\x04\x00shop' b'\x07\x00address\x0e\x00127.0.0.1:3031'
            b'\x09\x00modifier1\x01\x000' b'\x09\x00modifier2\x01\x000')
    assert packet == bytes([224, len(body), 0, 1]) + body


def test_send_packet_sends_one_datagram_to_each_server_and_names_the_ones_it_cannot_reach(tmp_path):
    path = str(tmp_path / 'subscription.sock')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        packet = _fastrouter.subscription_packet('shop', '/run/shop/shop-1.sock', _fastrouter.UNSUBSCRIBE)
        missing = str(tmp_path / 'missing.sock')
        assert _fastrouter.send_packet(packet, [path, missing], 1.0) == ['%s: No such file or directory' % missing]
        assert server.recv(4096) == packet
    finally:
        server.close()
