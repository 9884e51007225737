"""cwrap's naming rule: the contract that lets native and Python programs find each other."""

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrappers.addressing import AddressError, Network, parse_socket_name, socket_name

V4, V6, TCP, UDP = socket.AF_INET, socket.AF_INET6, socket.SOCK_STREAM, socket.SOCK_DGRAM


@pytest.mark.parametrize(
    "family,sotype,iface,port,name",
    [
        (V4, TCP, 10, 445, "T0A01BD"),  # the examples verified against libsocket_wrapper 1.3.5
        (V4, UDP, 10, 53, "U0A0035"),
        (V6, TCP, 10, 445, "X0A01BD"),
        (V6, UDP, 10, 53, "Y0A0035"),
        (V4, TCP, 35, 445, "T2301BD"),
        (V4, TCP, 21, 8080, "T151F90"),
        (V4, UDP, 35, 443, "U2301BB"),
        (V4, TCP, 21, 21967, "T1555CF"),
    ],
)
def test_known_names(family, sotype, iface, port, name):
    assert socket_name(family, sotype, iface, port) == name
    parsed = parse_socket_name("/some/dir/" + name)
    assert (parsed.family, parsed.sotype, parsed.iface, parsed.port) == (family, sotype, iface, port)


@given(
    st.sampled_from([(V4, TCP), (V4, UDP), (V6, TCP), (V6, UDP)]),
    st.integers(1, 64),
    st.integers(0, 65535),
)
def test_name_round_trip(kind, iface, port):
    name = socket_name(kind[0], kind[1], iface, port)
    assert len(name) == 7 and name == name.upper()
    parsed = parse_socket_name(name)
    assert (parsed.family, parsed.sotype, parsed.iface, parsed.port) == (*kind, iface, port)


@pytest.mark.parametrize("name", ["T0001BD", "T4101BD", "Z0A01BD", "T0A01B", "T0A01BDX", "EINVAL", "T0G01BD", ".wirecheck"])
def test_names_cwrap_would_not_parse(name):
    assert parse_socket_name(name) is None


@given(st.text(max_size=12))
def test_parse_never_raises(text):
    parse_socket_name(text)


def test_interface_addresses():
    net = Network()
    assert net.iface_address(V4, 10) == "127.0.0.10"
    assert net.iface_address(V6, 10) == "fd00::5357:5f0a"
    assert net.iface_address(V6, 35) == "fd00::5357:5f23"
    assert Network("10.53.57.0", 35).my_address(V4) == "10.53.57.35"
    assert net.iface_of(V6, "fd00::5357:5f0a") == 10
    assert net.iface_of(V6, "::1") is None
    assert net.iface_of(V6, "::ffff:127.0.0.10") is None  # no IPv4-mapped handling, as cwrap
    assert Network("10.53.57.0").iface_of(V4, "127.0.0.10") is None


def test_bind_rules():
    net = Network(default_iface=21)
    assert net.bind_iface(V4, TCP, "0.0.0.0") == 21
    assert net.bind_iface(V6, TCP, "::") == 21
    assert net.bind_iface(V4, UDP, "255.255.255.255") == 21
    assert net.bind_iface(V4, UDP, "127.255.255.255") == 21
    for host in ("192.168.1.1", "127.0.1.5", "10.53.57.5"):
        with pytest.raises(AddressError) as e:
            net.bind_iface(V4, TCP, host)
        assert e.value.errno == errno.EADDRNOTAVAIL
    for host in ("127.0.0.0", "127.0.0.65", "127.0.0.255"):  # cwrap aborts the process here
        with pytest.raises(AddressError) as e:
            net.bind_iface(V4, TCP, host)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(AddressError) as e:
        net.bind_iface(V6, TCP, "fd00::5357:5f41")
    assert e.value.errno == errno.EINVAL


def test_remote_rules():
    net = Network()
    assert net.remote_iface(V4, "127.0.0.200") == 200  # not range-checked: names a file that never exists
    for host in ("192.168.1.1", "127.0.1.5", "127.255.255.255"):
        with pytest.raises(AddressError) as e:
            net.remote_iface(V4, host)
        assert e.value.errno == errno.ENETUNREACH
    with pytest.raises(AddressError) as e:
        net.remote_iface(V6, "::1")
    assert e.value.errno == errno.ENETUNREACH


def test_network_validation_names_the_variable():
    with pytest.raises(ValueError, match="SOCKET_WRAPPER_IPV4_NETWORK"):
        Network("192.168.0.0")
    with pytest.raises(ValueError, match="SOCKET_WRAPPER_DEFAULT_IFACE"):
        Network(default_iface=65)
