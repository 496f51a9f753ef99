"""Module parameters in ABI 1.1: bounds and choices that petreld -n enforces,
LIST values and read-only core parameters for modules, and the descriptor's
check() callback, run by petreld -n, at start and before a reload is
accepted (in the master, where init has not run), reporting problems as
main.cf:LINE: parameter: problem."""
import os
import socket
import subprocess
import tempfile

from harness import CLEANUP_DIRS, PETRELD, Petrel, Tap, free_port
from modlib import module_dir

t = Tap()
mods = module_dir("apimod")
files = tempfile.mkdtemp(prefix="petrel-apimod-")
os.chmod(files, 0o755)
CLEANUP_DIRS.append(files)
key = os.path.join(files, "key.pem")
with open(key, "w") as f:
    f.write("not really a key\n")
os.chmod(key, 0o644)
sock_path = os.path.join(files, "daemon.sock")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sock_path)
os.chmod(sock_path, 0o666)
BASE = {"modules": "apimod", "module_directory": mods}


def check(p):
    return subprocess.run(p.command(PETRELD, "-c", p.conf, "-n"), capture_output=True, text=True, timeout=60)


def refused(settings, pattern, desc):
    with Petrel(t, start=False, main_cf=dict(BASE, **settings)) as p:
        r = check(p)
        t.ok(r.returncode != 0, "petreld -n fails: " + desc, r.stderr)
        t.like(r.stderr, pattern, "  with " + pattern.replace("\\", ""))


# --- bounds and choices --------------------------------------------------------
refused({"apimod_level": "11"}, r"main\.cf:\d+: apimod_level: value \"11\" is above the maximum 10", "INT above max")
refused({"apimod_level": "0"}, r"main\.cf:\d+: apimod_level: value \"0\" is below the minimum 1", "INT below min")
refused({"apimod_window": "2h"}, r"main\.cf:\d+: apimod_window: value \"2h\" is above the maximum 3600",
        "TIME above max")
refused({"apimod_mode": "reckless"}, r"main\.cf:\d+: apimod_mode: bad value \"reckless\" \(expected one of: fast, "
        r"careful\)", "STRING not among the choices")
refused({"apimod_tags": "red, purple"}, r"main\.cf:\d+: apimod_tags: bad item \"purple\" \(expected any of: red, "
        r"green, blue\)", "LIST item not among the choices")

# --- check() -------------------------------------------------------------------
refused({"apimod_key_file": "/nonexistent/key.pem"},
        r"main\.cf:\d+: apimod_key_file: /nonexistent/key\.pem: No such file or directory", "check: a missing key file")
refused({"apimod_url": "http//example"},
        r"main\.cf:\d+: apimod_url: malformed URL \"http//example\" \(expected redis://HOST:PORT or unix:/PATH\)",
        "check: a malformed URL")
refused({"apimod_socket": key}, r"main\.cf:\d+: apimod_socket: %s is not a socket" % key.replace(".", r"\."),
        "check: a socket path that is a plain file")

good = dict(BASE, apimod_key_file=key, apimod_url="redis://127.0.0.1:6379", apimod_socket=sock_path,
            apimod_mode="CAREFUL", apimod_level="10", apimod_window="1h", apimod_tags="blue red",
            myhostname="mx.params.test", mynetworks="127.0.0.0/8, 192.0.2.0/24")
with Petrel(t, start=False, main_cf=good) as p:
    r = check(p)
    t.ok(r.returncode == 0, "petreld -n accepts values within bounds, choices in any case, and what check() likes",
         r.stderr)
    t.like(r.stderr, r"module apimod: check ran \(initialised: no\)", "check() runs where init has not")

# At start: a module's check stops the start.
with Petrel(t, start=False, main_cf=dict(BASE, apimod_key_file="/nonexistent/key.pem")) as p:
    r = subprocess.run(p.command(PETRELD, "-c", p.conf), capture_output=True, text=True, timeout=60)
    t.ok(r.returncode != 0 and "not starting" in r.stderr, "petreld does not start when a module's check fails",
         r.stderr)
    t.like(r.stderr, r"apimod_key_file: /nonexistent/key\.pem: No such file or directory", "and says why")

# Running: values reach the module (main.cf's, and a service's -o); a reload
# with a failing check is refused.
port2 = free_port()
with Petrel(t, main_cf=good, extra_services="127.0.0.1:%d inet n - n - - smtpd -o myhostname=sub.params.test "
            "-o apimod_mode=fast -o apimod_level=3 -o smtputf8_enable=no -o mynetworks=10.0.0.0/8\n" % port2) as p:
    line = p.wait_log(r"module apimod: mode=.*")
    t.like(line and line.group(0), r"mode=CAREFUL level=10 window=3600 tags=\[blue\] \[red\] myhostname=mx\.params\.test "
           r"mynetworks=\[127\.0\.0\.0/8\] \[192\.0\.2\.0/24\] message_size_limit=10240000 smtputf8_enable=1",
           "init reads its parameters, a LIST's items, and core parameters")
    t.ok(p.wait_log(r"module apimod: petrel_config_string: \"apimod_mode\" is not a core parameter \(it is the "
                    r"module's own: use petrel_param_\*\)") is not None,
         "petrel_config_* refuses a name that is not a core parameter")
    t.ok(p.wait_log(r"petrel_config_string of its own parameter: NULL") is not None, "and gives NULL")
    t.ok(p.wait_log(r"module apimod: service 127\.0\.0\.1:%d: myhostname=mx\.params\.test apimod_mode=CAREFUL "
                    r"apimod_level=10 smtputf8_enable=1 mynetworks=127\.0\.0\.0/8" % p.port) is not None,
         "petrel_service_config_*: a service without -o sees main.cf's values")
    t.ok(p.wait_log(r"module apimod: service 127\.0\.0\.1:%d: myhostname=sub\.params\.test apimod_mode=fast "
                    r"apimod_level=3 smtputf8_enable=0 mynetworks=10\.0\.0\.0/8" % port2) is not None,
         "  a service with -o sees its own, core parameters and the module's own alike")
    t.ok(p.wait_log(r"module apimod: no such service: myhostname=mx\.params\.test; past the end: NULL") is not None,
         "  an unknown service gives main.cf's values; petrel_service_at past the end gives NULL")
    t.ok(p.wait_log(r"module apimod: petrel_service_config_string: \"nosuchparam_x\" is neither a core parameter "
                    r"nor the module's own") is not None and
         p.wait_log(r"petrel_service_config_string of an unknown parameter: NULL") is not None,
         "  an unknown parameter is refused with a warning (NULL)")
    p.write_main_cf(dict(p.settings, apimod_url="redis://nowhere"))
    r = p.petrelctl("reload")
    t.ok(r.returncode != 0, "a reload whose module check fails is refused", r.stdout + r.stderr)
    t.ok(p.wait_log(r"main\.cf:\d+: apimod_url: malformed URL \"redis://nowhere\"") is not None,
         "the check's problem is logged by the master")
    t.ok(p.wait_log(r"reload refused: the configuration has errors") is not None, "with the refusal")
    t.like(p.petrelctl("status").stdout, r"configuration generation 1,", "the running configuration stays")
    c = p.connect()
    t.like(c.ehlo(), r"^250", "and keeps serving")
    c.close()

# A service's -o of a module's own parameter takes effect only when the module
# declared it per_service (apimod_mode, apimod_level: read above per service);
# any other is refused, naming the service, the option and what would not
# happen, unless petrel_accept_unimplemented accepts it.
def service_option(options, settings=None, command="smtpd"):
    port3 = free_port()
    with Petrel(t, start=False, main_cf=dict(good, **(settings or {})),
                extra_services="127.0.0.1:%d inet n - n - - %s %s\n" % (port3, command, options)) as p:
        r = check(p)
        return r, port3


r, port3 = service_option("-o apimod_window=10s")
t.ok(r.returncode != 0, "an -o of a module parameter the module reads from main.cf only is refused", r.stderr)
t.like(r.stderr, r"master\.cf:\d+: service 127\.0\.0\.1:%d \(command smtpd\): -o apimod_window=10s is not "
       r"applied: module apimod reads apimod_window from main\.cf only \(not per service\), so this service's "
       r"sessions run with main\.cf's value; refusing to start: this changes the module's filtering on this "
       r"service \(set it in main\.cf, or to start anyway, list apimod_window in petrel_accept_unimplemented\)"
       % port3, "  naming the service, the option and what will not happen")
r, port3 = service_option("-o apimod_hook_timeout=5s")
t.like(r.stderr, r"service 127\.0\.0\.1:%d \(command smtpd\): -o apimod_hook_timeout=5s is not applied: module "
       r"apimod reads apimod_hook_timeout from main\.cf only" % port3,
       "  the same for the parameters the core gives every module (apimod_hook_timeout)")
r, port3 = service_option("-o apimod_window=10s", {"petrel_accept_unimplemented": "apimod_window"})
t.ok(r.returncode == 0, "petrel_accept_unimplemented accepts it", r.stderr)
t.like(r.stderr, r"warning: .*master\.cf:\d+: service 127\.0\.0\.1:%d \(command smtpd\): -o apimod_window=10s "
       r"is not applied: .* \(accepted by petrel_accept_unimplemented\)" % port3, "  with a warning")
t.ok("apimod_window is not a parameter Petrel refuses" not in r.stderr, "  and no complaint about the acceptance",
     r.stderr)
r, port3 = service_option("-o apimod_mode=fast -o apimod_level=2")
t.ok(r.returncode == 0 and "not applied" not in r.stderr,
     "an -o of a parameter the module declared per_service is accepted quietly", r.stderr)
r, port3 = service_option("-o apimod_level=2", command="postscreen")
t.like(r.stderr, r"-o apimod_level=2 is not applied: module apimod reads apimod_level from main\.cf only \(not "
       r"per service\), so this service's sessions run with main\.cf's value \(and module hooks run in the smtpd "
       r"service postscreen passes to, not here\)",
       "on postscreen's own line even a per_service parameter is refused: its hooks run in the pass service")
listener.close()
t.done()
