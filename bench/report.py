"""Turns bench/results/*.json (fleetcast loadtest reports) into bench/RESULTS.md."""
import glob, json, os, platform, subprocess, sys, datetime

out = sys.argv[1]
reports = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    name, who, _ = os.path.basename(path).rsplit(".", 2)
    reports.setdefault(name, {})[who] = json.load(open(path))

def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 1024 / 1024
    return 0

rows = [
    ("connected", lambda r: r["connected"], "{:,}"),
    ("connect errors", lambda r: sum(r["connect_errors"].values()), "{:,}"),
    ("connect p99 ms", lambda r: r["connect_ms"]["p99"], "{:.2f}"),
    ("all reconnected s", lambda r: r.get("reconnect_all_s"), "{:.2f}"),
    ("published", lambda r: r["published"], "{:,}"),
    ("received/s", lambda r: r["received_per_s"], "{:,.0f}"),
    ("lost", lambda r: r["lost"], "{:,}"),
    ("duplicates", lambda r: r["duplicates"], "{:,}"),
    ("latency p50 ms", lambda r: r["latency_ms"]["p50"], "{:.2f}"),
    ("latency p99 ms", lambda r: r["latency_ms"]["p99"], "{:.2f}"),
    ("latency max ms", lambda r: r["latency_ms"]["max"], "{:.2f}"),
    ("broker cpu % of a core", lambda r: r.get("broker_cpu_percent"), "{:.1f}"),
    ("broker rss MiB", lambda r: r.get("broker_rss_mib"), "{:.1f}"),
    ("broker KiB per connection", lambda r: r.get("broker_kib_per_connection"), "{:.1f}"),
    ("loadtest cpu %", lambda r: r["own_cpu_percent"], "{:.1f}"),
]

print("# fleetcast vs mosquitto: benchmark results\n")
print(f"Machine: {os.cpu_count()} cores, {mem_gib():.0f} GiB, {platform.platform()}; "
      f"run finished {datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(out, 'commands.txt')), datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")
try:
    mv = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
except Exception:
    mv = "mosquitto (version unknown)"
print(f"Brokers: fleetcast (release build, `bench/fleetcast-bench.toml`: publish quotas raised to 4,000,000/s, global connect quota to 100,000/s) and {mv}"
      " (`bench/mosquitto.conf.in`: its defaults). Both on loopback, one at a time, same load.")
print("Produced by `bench/run.sh`; the exact commands are in `bench/results/commands.txt`, the raw reports beside it.")
print("The machine is shared and noisy: compare the two columns of one table (the ratio), not runs.\n")
summary = os.path.join(os.path.dirname(__file__), "SUMMARY.md")
if os.path.exists(summary):
    print(open(summary).read())
for name, by in reports.items():
    print(f"## {name}\n")
    whos = [w for w in ("fleetcast", "mosquitto") if w in by]
    print("| | " + " | ".join(whos) + (" | fleetcast / mosquitto |" if len(whos) == 2 else " |"))
    print("|---|" + "---|" * len(whos) + ("---|" if len(whos) == 2 else ""))
    for label, get, fmt in rows:
        vals = [get(by[w]) for w in whos]
        if all(v is None for v in vals):
            continue
        cells = [fmt.format(v) if v is not None else "-" for v in vals]
        ratio = ""
        if len(whos) == 2:
            a, b = vals
            ratio = f" {a / b:.2f} |" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else " - |"
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)
    print()
# Sections written by hand for the other bench scripts (geofences, cluster, map), kept
# across reruns of this one.
others = os.path.join(os.path.dirname(__file__), "OTHERS.md")
if os.path.exists(others):
    print(open(others).read())
