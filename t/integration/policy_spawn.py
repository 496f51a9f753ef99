"""What Postfix's spawn(8) does for a policy server, for the tests: listens on
a UNIX socket and runs a program per connection with the connection as its
standard input and output (policyd-spf speaks the policy protocol that way).

    policy_spawn.py SOCKET-PATH PROGRAM [ARGS...]

Runs until killed; children are reaped as they end."""
import os
import signal
import socket
import subprocess
import sys


def main():
    path, argv = sys.argv[1], sys.argv[2:]
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o666)
    sock.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children reaped by the kernel
    print("listening", flush=True)
    while True:
        conn, _ = sock.accept()
        subprocess.Popen(argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL,
                         close_fds=True)
        conn.close()


if __name__ == "__main__":
    main()
