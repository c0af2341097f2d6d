"""Watch callguard refuse a call at the SIP edge, on this machine.

    python examples/sip_edge.py            # two calls through the proxy, then everything stops
    python examples/sip_edge.py --keep     # stays up: place calls yourself with `callguard sip call`

Starts what ``callguard demo`` starts (an embedded broker and Redis, the sample
data, a worker deciding by ``sample/demo-policy.toml``), issues a token for the
sample call centre ``op-roma`` and client ``acme``, starts a stand-in carrier
(``callguard sip callee``) and Kamailio with ``deploy/sip/kamailio.cfg`` as
shipped (only its defines pointed at this machine's ports), then places an
allowed and a denied call with ``callguard sip call`` as a dialer would.

Needs Debian's ``kamailio``, ``kamailio-utils-modules`` and
``kamailio-json-modules`` (``./dev test`` installs them as root) and
``pip install 'callguard[embedded]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

from callguard.dev.demo import sample_path
from callguard.dev.embedded import (
    SIP_CONFIG,
    Embedded,
    EmbeddedError,
    free_port,
    free_udp_port,
    kamailio_defines,
    kamailio_unavailable,
    start_kamailio,
    wait_healthy,
)

OPERATOR, CLIENT, CALLER_ID = "op-roma", "acme", "+390844000001"
ALLOWED, DENIED = "+393470000001", "+393470000150"  # clear and listed; opposed, no consent


def callguard(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "callguard", *argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"callguard {' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout


def warm_up(web_port: int, token: str) -> None:
    """HTTP checks until 12 in a row answered within 100 ms: the check API's Kafka
    client starts at the first check, and a fresh worker's first decision on each
    empty audit partition takes about a second."""
    fast = 0
    for attempt in range(100):
        body = {"callee": f"+39347000{attempt % 60 + 20:04d}", "operator_id": OPERATOR, "client_id": CLIENT,
                "caller_id": CALLER_ID, "intent_id": f"sip-edge-warm-up-{attempt}"}  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{web_port}/v1/check",
            data=orjson.dumps(body),
            headers={"Authorization": f"Bearer {token}"},
        )
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        fast = fast + 1 if time.monotonic() - started < 0.1 else 0
        if fast == 12:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="the proxy's UDP port (default: a free one)")
    args = parser.parse_args()
    reason = kamailio_unavailable()
    if reason:
        print(f"sip_edge: {reason}", file=sys.stderr)
        return 2
    today = datetime.now(ZoneInfo("Europe/Rome")).date()
    print("starting an embedded broker (Tansu) and Redis, the sample data and a worker…", flush=True)
    with Embedded() as servers:
        workdir = servers.workdir
        web_port = free_port()
        env = {**os.environ, "CALLGUARD_BROKER": servers.broker_url, "CALLGUARD_REDIS_URL": servers.redis_url,
               "CALLGUARD_WEB_PORT": str(web_port), "CALLGUARD_WEB_HOST": "127.0.0.1",
               "CALLGUARD_POLICY": str(sample_path("demo-policy.toml"))}  # fmt: skip
        for argv in (
            ["operators", "load", str(sample_path("operators.csv"))],
            ["mandates", "load", str(sample_path("mandates.csv"))],
            ["register", "load", str(sample_path("register.csv")), "--as-of", str(today - timedelta(days=2)),
             "--client", CLIENT],
            ["directory", "load", str(sample_path("directory.csv")), "--as-of", str(today - timedelta(days=1))],
            ["consents", "load", str(sample_path("consents.csv"))],
            ["optouts", "load", str(sample_path("optouts.csv"))],
        ):  # fmt: skip
            callguard(env, *argv)
        with (workdir / "worker.log").open("wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "callguard", "worker"], env=env, stdout=log, stderr=log)
        processes = [worker]
        kamailio = None
        try:
            try:
                wait_healthy(web_port, worker)
            except EmbeddedError as exc:
                raise SystemExit(f"the worker did not start ({exc}); see {workdir / 'worker.log'}") from None
            print(f"\n$ callguard tokens issue --operator-id {OPERATOR} --client-id {CLIENT} --name sip-edge")
            token = callguard(env, "tokens", "issue", "--operator-id", OPERATOR, "--client-id", CLIENT,
                              "--name", "sip-edge").strip()  # fmt: skip
            print(f"{token[:8]}… (printed once; it goes in the proxy's dialers file)")
            warm_up(web_port, token)

            carrier = ("127.0.0.1", free_udp_port())
            print(f"\n$ callguard sip callee --listen {carrier[0]}:{carrier[1]}      # the stand-in carrier")
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "callguard", "sip", "callee", "--listen", f"{carrier[0]}:{carrier[1]}"], env=env
            ))  # fmt: skip
            dialers = workdir / "dialers.list"
            dialers.write_text(f"1 127.0.0.1 32 0 operator={OPERATOR};token={token};client={CLIENT}\n")
            dialers.chmod(0o600)
            port = args.port or free_udp_port()
            check_url = f"http://127.0.0.1:{web_port}/v1/check"
            defines = " ".join(
                f"'{d}'" if d != "-A" else d for d in kamailio_defines(port, carrier, check_url, dialers)
            )
            print(f"$ kamailio -f {SIP_CONFIG} -DD -E {defines}")
            kamailio = start_kamailio(workdir, carrier, check_url, dialers, port=port)
            print(f"  the proxy listens on udp:127.0.0.1:{port}; its log: {kamailio.log_path}\n", flush=True)
            time.sleep(0.5)  # the callee's first line first

            proxy = f"127.0.0.1:{port}"
            for callee, what in ((ALLOWED, "clear in acme's register result"), (DENIED, "opposed, no consent")):
                print(
                    f"$ callguard sip call {callee} --proxy {proxy} --caller-id {CALLER_ID}      # {what}", flush=True
                )
                subprocess.run([sys.executable, "-m", "callguard", "sip", "call", callee, "--proxy", proxy,
                                "--caller-id", CALLER_ID], env=env, check=False)  # fmt: skip
                time.sleep(0.3)
                print(flush=True)
            if args.keep:
                print(f"running; place calls with: callguard sip call NUMBER --proxy {proxy} --caller-id {CALLER_ID}")
                print("(sample numbers +39 347 000 0000-0179: see src/callguard/sample/). Ctrl-C stops everything.")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
        finally:
            if kamailio is not None:
                kamailio.stop()
            for process in reversed(processes):
                process.terminate()
                process.wait(30)
    print("stopped the proxy, the callee, the worker, the broker and Redis.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
