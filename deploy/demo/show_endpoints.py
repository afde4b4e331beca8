"""Prints the endpoints in a weft-proxy /config_dump (JSON on stdin), one service a line."""
import json
import sys

dump = json.load(sys.stdin)
for resource in dump["resources"]["endpoints"]:
    endpoints = ", ".join(
        "{} ({})".format(e["address"], e["zone"] or "-") for e in resource["endpoints"]
    )
    print("  {:<16} v{:<4} {}".format(resource["name"], resource["version"], endpoints))
