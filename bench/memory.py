#!/usr/bin/env python3
# Memory per large live agenda (issue 19 item 4): starts `pop serve` (the binary given), submits N agendas of
# one 0.5 MB payload each as one customer and prints the RSS growth per agenda. Extra args go to `pop serve`.
#   N=400 bench/memory.py target/release/pop --max-live-bytes-per-customer 1000000000
#   N=400 bench/memory.py target/release/pop --max-live-bytes-per-customer 1000000000 --memory-budget 1   # degraded
import json, os, subprocess, sys, time, urllib.request, tempfile, re
POP = sys.argv[1]; extra = sys.argv[2:]
d = tempfile.mkdtemp()
tok = [{"token":"tok_admin_memtest_0000000000000000","name":"admin","role":"admin","customers":["*"]}]
open(f"{d}/tokens.json","w").write(json.dumps(tok))
p = subprocess.Popen([POP,"serve","--data-dir",f"{d}/data","--bind","127.0.0.1:0","--token-file",f"{d}/tokens.json","--scheduler","false"]+extra, stdout=subprocess.PIPE, stderr=open(f"{d}/log","w"), text=True)
addr=None
for line in p.stdout:
    m = re.search(r"listening on (?:http://)?([0-9.:]+)", line)
    if m: addr=m.group(1); break
def gql(q, v):
    req = urllib.request.Request(f"http://{addr}/graphql", data=json.dumps({"query":q,"variables":v}).encode(), headers={"content-type":"application/json","authorization":"Bearer "+tok[0]["token"]})
    r = json.load(urllib.request.urlopen(req, timeout=60))
    if r.get("errors"): raise SystemExit(r["errors"])
    return r["data"]
def rss(): return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1))//1024
gql("mutation($p: JSON!) { createResourcePool(resourcePool: $p) { position } }", {"p":{"id":"pool","customerId":"ops","title":"p"}})
gql("mutation($c: JSON!) { createCustomer(customer: $c) { position } }", {"c":{"id":"acme","title":"a","resourcePoolId":"pool"}})
gql("mutation($i: JSON!) { createInsight(insight: $i) { position } }", {"i":{"id":"ins","customerId":"ops","resourcePoolId":"pool","title":"i","queueSize":5,"isGlobal":True,"mappers":{"operationType":["ffmpeg"]}}} )
time.sleep(1); base=rss()
blob = "x"*500_000
N=int(os.environ.get("N","60"))
for i in range(N):
    gql("mutation($a: JSON!) { submitAgenda(agenda: $a) { position } }", {"a":{"id":f"big-{i}","customerId":"acme","operations":[{"name":"only","type":"ffmpeg","payload":{"blob":blob}}]}})
time.sleep(2)
after=rss()
print(f"{' '.join(extra) or 'default'}: RSS before {base} MiB, after {N} agendas of 0.5 MB: {after} MiB, +{(after-base)/N:.2f} MiB/agenda")
p.terminate(); p.wait()
