"""Short-prompt load on a running `minference serve`: python3 load.py PORT REQUESTS CONCURRENCY MAX_TOKENS."""
import json, sys, time, threading, urllib.request
port, n_total, conc, max_tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
url=f"http://127.0.0.1:{port}/v1/chat/completions"
lock=threading.Lock(); res=[]; idx=[0]
def worker():
    while True:
        with lock:
            if idx[0] >= n_total: return
            i=idx[0]; idx[0]+=1
        body={"model":"SmolLM2-135M-Instruct.Q4_1","messages":[{"role":"user","content":f"Name a color. ({i})"}],"max_tokens":max_tokens,"temperature":0}
        req=urllib.request.Request(url,data=json.dumps(body).encode(),headers={"content-type":"application/json"})
        t=time.time()
        try:
            r=urllib.request.urlopen(req,timeout=600); s=r.status; v=json.load(r)
        except urllib.error.HTTPError as e:
            s=e.code; v={}
        with lock: res.append((s,time.time()-t,v.get("minference",{}).get("ttft_seconds",0),v.get("usage",{}).get("completion_tokens",0)))
t0=time.time()
ts=[threading.Thread(target=worker) for _ in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
wall=time.time()-t0
ttft=sorted(r[2] for r in res); lat=sorted(r[1] for r in res)
pct=lambda a,p: a[round((len(a)-1)*p)]
print(f"{len(res)} requests, {conc} concurrent, max_tokens {max_tokens}: {wall:.1f} s, {len(res)/wall:.2f} req/s, {sum(r[3] for r in res)/wall:.1f} generated tok/s; TTFT p50 {pct(ttft,.5)*1e3:.0f} ms p99 {pct(ttft,.99)*1e3:.0f} ms; latency p50 {pct(lat,.5):.2f} s p99 {pct(lat,.99):.2f} s; statuses {sorted(set(r[0] for r in res))}")
