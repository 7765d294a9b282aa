#!/usr/bin/env python3
"""mdns_probe: an independent mDNS client (python-zeroconf) for Edgenode's system tests.

It never shares code with the node: what it sees is what a phone or another
implementation would see. Every mode prints one JSON object per line on stdout,
flushed at once, so a test can follow events as they happen; `after_ms` counts
from the start of the probe.

  browse TYPE [--timeout S] [--count N]
      Browse TYPE (e.g. _edgenode._udp.local.) and resolve every instance:
      {"event": "resolved", "name", "fullname", "type", "port", "server",
       "addresses", "txt", "after_ms"}, {"event": "removed", "fullname", "after_ms"},
      and at the end {"event": "done", "after_ms"}. Stops after S seconds, or
      once N distinct instances are resolved.
  host NAME [--timeout S]
      Resolve NAME (e.g. kitchen.local.) to addresses:
      {"event": "host", "name", "addresses", "after_ms"} (empty addresses on timeout).
  rogue --name N --id ID --pin PIN --port P --address IP [--seconds S]
      Register _edgenode._udp.local. instance N with TXT id/pin/v=1 for S seconds,
      then unregister: {"event": "registered"} ... {"event": "unregistered"}.
"""

import argparse
import json
import queue
import sys
import time

from zeroconf import AddressResolver, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

STARTED = time.monotonic()
EDGENODE_TYPE = "_edgenode._udp.local."


def elapsed_ms():
    return int((time.monotonic() - STARTED) * 1000)


def emit(**fields):
    fields.setdefault("after_ms", elapsed_ms())
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def instance_of(fullname, service_type):
    suffix = "." + service_type
    return fullname[: -len(suffix)] if fullname.endswith(suffix) else fullname


def decode_txt(properties):
    txt = {}
    for key, value in (properties or {}).items():
        key = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        txt[key] = "" if value is None else value
    return txt


def browse(args):
    zc = Zeroconf()
    changes = queue.Queue()

    def on_change(zeroconf, service_type, name, state_change):
        changes.put((state_change, name))

    ServiceBrowser(zc, args.type, handlers=[on_change])
    resolved = set()
    deadline = STARTED + args.timeout
    try:
        while time.monotonic() < deadline:
            if args.count and len(resolved) >= args.count:
                break
            try:
                state_change, name = changes.get(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if state_change is ServiceStateChange.Removed:
                resolved.discard(name)
                emit(event="removed", fullname=name)
                continue
            info = ServiceInfo(args.type, name)
            remaining_ms = int(max(0.1, deadline - time.monotonic()) * 1000)
            if not info.request(zc, min(3000, remaining_ms)):
                emit(event="unresolved", fullname=name)
                continue
            resolved.add(name)
            emit(
                event="resolved",
                name=instance_of(name, args.type),
                fullname=name,
                type=args.type,
                port=info.port,
                server=info.server,
                addresses=sorted(info.parsed_scoped_addresses()),
                txt=decode_txt(info.properties),
            )
        emit(event="done")
    finally:
        zc.close()


def host(args):
    zc = Zeroconf()
    try:
        resolver = AddressResolver(args.name)
        found = resolver.request(zc, int(args.timeout * 1000))
        addresses = sorted(resolver.parsed_scoped_addresses()) if found else []
        emit(event="host", name=args.name, addresses=addresses)
    finally:
        zc.close()


def rogue(args):
    zc = Zeroconf()
    info = ServiceInfo(
        EDGENODE_TYPE,
        f"{args.name}.{EDGENODE_TYPE}",
        port=args.port,
        properties={"id": args.id, "pin": args.pin, "v": "1", "region": "rogue"},
        server=f"{args.name}.local.",
        parsed_addresses=[args.address],
    )
    try:
        zc.register_service(info)
        emit(event="registered", fullname=info.name)
        time.sleep(args.seconds)
        zc.unregister_service(info)
        emit(event="unregistered", fullname=info.name)
    finally:
        zc.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    browse_args = modes.add_parser("browse")
    browse_args.add_argument("type")
    browse_args.add_argument("--timeout", type=float, default=3.0)
    browse_args.add_argument("--count", type=int, default=0)
    host_args = modes.add_parser("host")
    host_args.add_argument("name")
    host_args.add_argument("--timeout", type=float, default=3.0)
    rogue_args = modes.add_parser("rogue")
    rogue_args.add_argument("--name", required=True)
    rogue_args.add_argument("--id", required=True)
    rogue_args.add_argument("--pin", required=True)
    rogue_args.add_argument("--port", type=int, default=8443)
    rogue_args.add_argument("--address", required=True)
    rogue_args.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    {"browse": browse, "host": host, "rogue": rogue}[args.mode](args)


if __name__ == "__main__":
    main()
