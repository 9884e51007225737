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


def _refused(call, err: int, *words: str) -> None:
    """``call`` raises AddressError with ``err`` and a message that names each of ``words``."""
    with pytest.raises(AddressError) as e:
        call()
    assert e.value.errno == err, e.value
    assert isinstance(e.value.strerror, str), e.value
    for word in words:
        assert word in e.value.strerror, (word, e.value.strerror)


def test_file_name_bounds():
    """socket_name writes what the two hex fields hold (cwrap's parser, not the writer, rejects iface 0)."""
    assert socket_name(V4, TCP, 0, 0) == "T000000"
    assert socket_name(V4, TCP, 0xFF, 0xFFFF) == "TFFFFFF"
    _refused(lambda: socket_name(V4, TCP, 256, 1), errno.EINVAL, "interface 256")
    _refused(lambda: socket_name(V4, TCP, -1, 1), errno.EINVAL, "interface -1")
    _refused(lambda: socket_name(V4, TCP, 1, 65536), errno.EINVAL, "port 65536", "0..65535")
    _refused(lambda: socket_name(V4, TCP, 1, -1), errno.EINVAL, "port -1")
    _refused(lambda: socket_name(socket.AF_UNIX, TCP, 1, 1), errno.EPROTONOSUPPORT, "family", "type")
    _refused(lambda: socket_name(V4, socket.SOCK_RAW, 1, 1), errno.EPROTONOSUPPORT, f"type {socket.SOCK_RAW}")
    assert parse_socket_name("T4001BD").iface == 64  # the last interface cwrap accepts


def test_interface_addresses_are_computed_not_only_cached():
    """The per-interface addresses are cached process-wide; compute them again from a clean cache."""
    from wrappers import addressing

    addressing._iface_address.cache_clear()
    net = Network()
    assert net.iface_address(V4, 1) == "127.0.0.1"
    assert net.iface_address(V6, 64) == "fd00::5357:5f40"
    assert Network("10.53.57.0").iface_address(V4, 7) == "10.53.57.7"
    assert net._iface_address_uncached(V4, 9) == "127.0.0.9"
    assert net._iface_address_uncached(V6, 9) == "fd00::5357:5f09"
    _refused(lambda: net._iface_address_uncached(socket.AF_UNIX, 1), errno.EAFNOSUPPORT,
             f"address family {socket.AF_UNIX}")


def test_bind_rules_edges():
    net = Network(default_iface=21)
    assert net.bind_iface(V4, TCP, "") == 21
    assert net.bind_iface(V6, TCP, "0:0::0") == 21  # unspecified, spelled another way
    assert net.bind_iface(V6, UDP, "::%eth0") == 21  # a scope does not change it
    assert net.bind_iface(V4, UDP, "<broadcast>") == 21
    assert net.bind_iface(V4, TCP, "127.0.0.1") == 1
    assert net.bind_iface(V4, TCP, "127.0.0.64") == 64
    assert net.bind_iface(V4, UDP, "127.0.0.5") == 5  # a UDP bind is not 'mine' unless broadcast
    _refused(lambda: net.bind_iface(V4, TCP, "255.255.255.255"), errno.EADDRNOTAVAIL, "255.255.255.255")
    _refused(lambda: net.bind_iface(V6, TCP, "::1"), errno.EADDRNOTAVAIL, "::1", "emulated network")
    _refused(lambda: net.bind_iface(V4, TCP, "127.0.0.65"), errno.EINVAL, "interface 65", "1..64")


def test_remote_rules_messages():
    net = Network()
    _refused(lambda: net.remote_iface(V4, "255.255.255.255"), errno.ENETUNREACH, "broadcast needs sendto()")
    _refused(lambda: net.remote_iface(V4, "<broadcast>"), errno.ENETUNREACH, "broadcast needs sendto()")
    _refused(lambda: net.remote_iface(V4, "192.168.1.1"), errno.ENETUNREACH, "192.168.1.1 is outside")


def test_ipv6_scope_is_everything_after_the_first_percent():
    """A host like fd00::5357:5f0a%eth0 names interface 10; the scope (after the first '%', even when it
    holds another '%', which the ipaddress module would refuse) plays no part."""
    net = Network()
    assert net.iface_of(V6, "fd00::5357:5f0a%eth0") == 10
    assert net.iface_of(V6, "fd00::5357:5f0a%a%b") == 10
    assert net.iface_of(V6, "fd00::5357:5f0a%%") == 10
    assert net.is_wildcard(V6, "::%a%b")
    assert net.is_wildcard(V6, "::%%")
    assert not net.is_wildcard(V6, "::1")
    assert not net.is_wildcard(V6, "not an address")
    assert not net.is_wildcard(V4, "0:0::0")  # the IPv6 spelling counts on an IPv6 socket only


def test_network_validation_messages():
    with pytest.raises(ValueError, match=r"is not one of 127\.0\.0\.0, 10\.53\.57\.0"):
        Network("192.168.0.0")
    with pytest.raises(ValueError, match=r"65 is outside 1\.\.64"):
        Network(default_iface=65)
    assert Network(default_iface=64).my_address(V4) == "127.0.0.64"
    assert Network(default_iface=1).my_address(V6) == "fd00::5357:5f01"
    with pytest.raises(ValueError, match="SOCKET_WRAPPER_DEFAULT_IFACE"):
        Network(default_iface=0)


def test_sockaddr_tuples():
    """The address tuple Python's socket API returns: 4 items for IPv6 (flowinfo, scope id), 2 for IPv4."""
    from wrappers.addressing import sockaddr

    assert sockaddr(V6, "fd00::5357:5f0a", 445) == ("fd00::5357:5f0a", 445, 0, 0)
    assert sockaddr(V4, "127.0.0.10", 445) == ("127.0.0.10", 445)
