import random
import socket


def free_even_port() -> int:
    """An even port below the ephemeral range whose odd neighbour is free too (a VNC pair)."""
    for _ in range(200):
        port = random.randrange(20000, 32000, 2)
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free even port pair")
